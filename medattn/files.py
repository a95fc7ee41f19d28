"""Writing files so that a kill never leaves a torn one: write a temporary file beside, then rename it."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes, read ``block`` bytes at a time (a model file need not fit in memory)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """A CSV of dict rows, written whole and renamed into place (readers never see half a file)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(dict.fromkeys(k for r in rows for k in r)),
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_rows(path: Path, header: list[str], rows) -> None:
    """A CSV of a header and plain rows (lists), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: list[dict], columns: tuple[str, ...] | list[str] | None = None,
                 empty: str = "(no rows)") -> str:
    """A Markdown table of rows (floats to 4 decimals); ``columns`` picks and orders the ones shown."""
    if not rows:
        return empty
    present = list(dict.fromkeys(k for r in rows for k in r))
    columns = [c for c in columns if c in present] if columns else present
    cells = [[f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(list(columns)), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
