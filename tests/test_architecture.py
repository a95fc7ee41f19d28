"""The house rules, checked on the source: no import cycle in medattn, plugins and examples import only
medattn.api, no function over 80 lines, and the core names no concrete component."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def _modules(package: Path, prefix: str) -> dict[str, Path]:
    out = {}
    for file in package.rglob("*.py"):
        parts = list(file.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([prefix, *parts])] = file
    return out


def _imports(name: str, file: Path, is_package: bool) -> set[str]:
    """Every module imported anywhere in the file (functions included), absolute."""
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules(ROOT / "medattn", "medattn")
    graph = {}
    for name, file in mods.items():
        targets = _imports(name, file, file.name == "__init__.py")
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_medattn_has_no_import_cycle():
    graph = import_graph()
    # a package imports its own submodules to register them; that edge is no cycle of meaning
    graph = {k: {t for t in v if not t.startswith(k + ".")} for k, v in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def _plugin_files() -> list[Path]:
    return sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py"))


def test_plugins_and_examples_import_only_the_public_api():
    bad = []
    for file in _plugin_files():
        for node in ast.walk(ast.parse(file.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom)
                     and node.module == "medattn" else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad.extend(f"{file.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                       if (n == "medattn" or n.startswith("medattn.")) and n != "medattn.api")
    assert not bad, "\n".join(bad)


def test_no_function_over_80_lines():
    long = []
    for file in sorted((ROOT / "medattn").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{file.relative_to(ROOT)}:{node.lineno} {node.name} has {n} lines")
    assert not long, "\n".join(long)


def test_core_names_no_concrete_component_and_no_outside_document():
    concrete = ("densenet121", "resnet50", "vgg16", "mldam", "cbis_ddsm", "synthetic_lesions", "REFERENCE", "§")
    found = []
    for file in sorted((ROOT / "medattn").rglob("*.py")):
        text = file.read_text()
        found.extend(f"{file.relative_to(ROOT)}: {word}" for word in concrete if word in text)
    assert not found, "\n".join(found)


# the packages stack in the data's order; a package may import those before it in this list, never after
LAYERS = ["components", "store", "evidence", "train", "jobs", "runs", "inference", "sweep"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for name, targets in graph.items():
        here = _layer(name)
        for target in sorted(targets):
            there = _layer(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{name} imports {target} ({LAYERS[here]} is below {LAYERS[there]})")
    return upward


def test_packages_import_only_downwards():
    assert not upward_imports(import_graph()), "\n".join(upward_imports(import_graph()))


def test_layer_check_catches_an_upward_import():
    graph = {"medattn.store.rundir": {"medattn.runs.plan", "medattn.errors"}, "medattn.runs.plan": {"medattn.store.rundir"}}
    assert upward_imports(graph) == ["medattn.store.rundir imports medattn.runs.plan (store is below runs)"]
