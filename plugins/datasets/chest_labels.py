"""The CheXpert label convention shared by MIMIC-CXR-JPG and CheXpert: 1, 0, -1 (uncertain), blank."""
from __future__ import annotations

from typing import Any

from medattn.api import UserError


def binary_label(value: str, params: dict[str, Any], where: str) -> int | None:
    """The 0/1 target of one label cell, or None when the policy drops the image."""
    v = value.strip()
    if v == "":
        return None if params["blank"] == "ignore" else 0
    try:
        x = float(v)
    except ValueError:
        raise UserError(f"{where}: label '{value}' is not 1, 0, -1 or blank") from None
    if x == 1:
        return 1
    if x == 0:
        return 0
    if x == -1:
        policy = params["uncertain"]
        return None if policy == "ignore" else (1 if policy == "one" else 0)
    raise UserError(f"{where}: label '{value}' is not 1, 0, -1 or blank")


def check_finding(finding: str, header: list[str], path: Any, skip: int) -> None:
    """The finding must be one of the label columns."""
    if finding not in header:
        raise UserError(f"{path} line 1: dataset.params.finding '{finding}' is not a column; label columns: "
                        f"{header[skip:]}")
