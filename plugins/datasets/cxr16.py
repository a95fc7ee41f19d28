"""``cxr16``: the 16 chest X-rays embedded in the package (see cxr16/ATTRIBUTION.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .image_folder import build_from_root, folder_params

CXR16_GROUP = r"(person\d+|IM-\d+)"


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``cxr16``: the 16 embedded chest X-rays (NORMAL=0, PNEUMONIA=1), split 8/4/4 by patient."""
    from importlib import resources

    root = Path(str(resources.files("medattn_plugins.datasets") / "cxr16"))
    if not root.is_dir():
        raise UserError(f"the embedded cxr16 sample is missing from the installed package ({root}); "
                        "reinstall medattn")
    p = folder_params(params, classes=["NORMAL", "PNEUMONIA"], group_regex=CXR16_GROUP, on_bad_sample="error")
    return build_from_root(root, p, ctx, "cxr16")
