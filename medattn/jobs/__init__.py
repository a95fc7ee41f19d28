"""Built-in jobs (train, test, explain, figure), registered through the same hook as any plugin.

A job component's factory is a :class:`medattn.jobs.base.Job` subclass; its ``PARAMS`` is the schema of the
top-level config section named after the job. Job modules import torch only inside their methods so that
listing plugins and printing the schema stay fast.
"""
from __future__ import annotations

from ..hookspecs import Component, hookimpl
from . import explain, figure, test, train


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("job", "train", "medattn.jobs:train_job",
                  "train with best/last checkpoints and a per-epoch history", train.PARAMS),
        Component("job", "test", "medattn.jobs.test:TestJob", "evaluate checkpoints on the test split", test.PARAMS),
        Component("job", "explain", "medattn.jobs:explain_job", "save attributions of selected images",
                  explain.PARAMS),
        Component("job", "figure", "medattn.jobs.figure:FigureJob", "draw the run's figures", figure.PARAMS),
    ]


# TRANSITIONAL (removed once train/explain define their Job classes): wrap a module-level run(run)
def _adapt(module, cls: str, name: str, writes: tuple, reads: tuple = (), distributed: bool = False):
    from .base import Job

    if hasattr(module, cls):
        return getattr(module, cls)

    class Legacy(Job):
        def run(self, run) -> None:
            module.run(run)

        def check_model(self, config, model):
            return layer_problems(config, model) if name == "explain" else []

    Legacy.name, Legacy.writes, Legacy.reads, Legacy.distributed = name, writes, reads, distributed
    return Legacy


def train_job(registry=None):
    return _adapt(train, "TrainJob", "train", ("checkpoint", "history"), distributed=True)(registry)


def explain_job(registry=None):
    return _adapt(explain, "ExplainJob", "explain", ("explanations",), ("checkpoint",))(registry)


def layer_problems(config: dict, model) -> list[tuple[tuple, str]]:  # TRANSITIONAL: moves into ExplainJob
    from ..errors import UserError

    problems = []
    for i, method in enumerate(config["explain"]["methods"]):
        layer = (method.get("params") or {}).get("layer")
        if not layer:
            continue
        try:
            model.cam_layer(layer)
        except UserError:
            names = [n for n, _ in model.named_modules() if n and n.count(".") < 3]
            problems.append((("explain", "methods", i, "params", "layer"),
                             f"{layer!r} is not a module of this model; modules: {', '.join(names[:40])}"
                             + (" ..." if len(names) > 40 else "")))
    return problems
