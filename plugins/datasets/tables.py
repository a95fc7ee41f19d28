"""CSV (and .csv.gz) list files read with their line numbers, for messages that name FILE line N."""
from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

from medattn.api import UserError


def find_table(folder: Path, name: str, field: str = "dataset.params.root") -> Path:
    """``folder/name`` or ``folder/name.gz``, else a UserError naming both."""
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    raise UserError(f"{folder / name}: required CSV not found (nor {name}.gz) under {field}={folder}")


class Table:
    """A CSV file: header, and rows as dicts with the 1-based line number where each starts."""

    def __init__(self, path: Path, required: list[str] | tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: CSV file not found")
        try:
            self._text = self._read()
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise UserError(f"{self.path}: cannot read CSV: {exc}") from None
        reader = csv.reader(io.StringIO(self._text))
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{self.path}: CSV is empty (no header line)") from None
        self.header = [h.strip() for h in header]
        missing = [c for c in required if c not in self.header]
        if missing:
            raise UserError(f"{self.path} line 1: missing required column(s) {missing}; the header has "
                            f"{self.header}")

    def _read(self) -> str:
        raw = self.path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(line number, row dict) for every data row; short rows are a UserError naming the line."""
        reader = csv.reader(io.StringIO(self._text))
        next(reader)
        line = reader.line_num
        for values in reader:
            start = line + 1
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(self.header):
                raise UserError(f"{self.path} line {start}: {len(values)} fields, the header has "
                                f"{len(self.header)}")
            yield start, dict(zip(self.header, values))

    def where(self, line: int) -> str:
        """'FILE line N'."""
        return f"{self.path} line {line}"
