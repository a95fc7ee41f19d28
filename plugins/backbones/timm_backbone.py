"""``timm``: any timm model by name, its levels from ``features_only`` (names, channels and strides from feature_info)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medattn.api import ModelContext, UserError

from .feature_backbone import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone
from .weights import missing_pretrained, torch_hub_file

_HF_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def cached_pretrained_file(model_name: str) -> tuple[Path | None, list[Path], str]:
    """(cached file or None, where it was looked for, url) of timm's default pretrained weights for ``model_name``."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise UserError(f"backbone.params.pretrained: timm has no pretrained weights for {model_name!r}")
    looked: list[Path] = []
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
        for name in files:
            found = try_to_load_from_cache(cfg.hf_hub_id, name)
            if isinstance(found, str):
                return Path(found), looked, ""
        repo_dir = Path(constants.HF_HUB_CACHE) / ("models--" + cfg.hf_hub_id.replace("/", "--"))
        looked.append(repo_dir / "snapshots" / "<revision>" / files[0])
    if cfg.url:
        path = torch_hub_file(cfg.url)
        if path.is_file():
            return path, looked, cfg.url
        looked.append(path)
    return None, looked, cfg.url or (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else "")


def create_features_model(params: dict[str, Any]) -> nn.Module:
    """``timm.create_model(model_name, features_only=True, ...)`` with local weights only; errors name the field."""
    import timm

    name = params["model_name"]
    kwargs: dict[str, Any] = {**params["model_kwargs"], "features_only": True, "in_chans": params["in_chans"]}
    if params["out_indices"]:
        kwargs["out_indices"] = tuple(params["out_indices"])
    file: Path | None = None
    if params["weights"]:
        file = Path(params["weights"]).expanduser()
        if not file.is_file():
            raise UserError(f"backbone.params.weights: weights file {str(file)!r} does not exist")
    elif params["pretrained"]:
        file, looked, url = cached_pretrained_file(name)
        if file is None:
            raise missing_pretrained(f"timm {name}", looked, url)
    if file is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(file), "source": ""})
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UserError(f"backbone.params.model_name: {name!r} is not a timm model "
                            f"(see timm.list_models())") from None
        if file is not None:
            raise UserError(f"backbone.params.{'weights' if params['weights'] else 'pretrained'}: "
                            f"{str(file)!r} does not fit timm {name}: {str(e).splitlines()[0]}") from None
        raise
    except (TypeError, AssertionError) as e:
        raise UserError(f"backbone.params: timm.create_model({name!r}) rejected {kwargs}: {e}") from None


class TimmBackbone(FeatureBackbone):
    """A timm ``features_only`` model: every stage it exposes is a level, all returned from its one pass."""

    def __init__(self, params: dict[str, Any]):
        body = create_features_model(params)
        info = body.feature_info
        levels = [{"name": n, "channels": int(c), "reduction": int(r)}
                  for n, c, r in zip(info.module_name(), info.channels(), info.reduction())]
        cfg = dict(getattr(body, "pretrained_cfg", None) or {})
        super().__init__(params["model_name"], params["in_chans"], cfg.get("mean", IMAGENET_MEAN),
                         cfg.get("std", IMAGENET_STD), levels, levels[-1]["name"])
        self.body = body
        children = dict(body.named_children())
        self._keys = {lv["name"]: self._module_key(lv["name"], children) for lv in levels}
        last = levels[-1]["name"]
        self.cam_layer = "body." + (self._keys[last] or ("model." + last))
        self.freeze(params["freeze"])
        if params.get("checkpointing"):
            if not hasattr(body, "set_grad_checkpointing"):
                raise UserError(f"backbone.params.checkpointing: timm {self.arch} offers no gradient checkpointing")
            body.set_grad_checkpointing(True)  # timm's own: each stage module under torch.utils.checkpoint

    @staticmethod
    def _module_key(level: str, children: dict[str, nn.Module]) -> str | None:
        """The child of the features wrapper that computes ``level`` (timm flattens dots into underscores)."""
        for key in (level.replace(".", "_"), level):
            if key in children:
                return key
        return None

    def _units(self) -> list[tuple[nn.Module, str]]:
        if any(k is None for k in self._keys.values()):
            raise UserError(f"backbone.params.freeze: timm {self.arch} does not expose its stages as modules; "
                            f"use 'none' or 'all'")
        ends = {k: n for n, k in self._keys.items()}
        units, pending = [], []
        for key, module in self.body.named_children():
            pending.append(module)
            if key in ends:
                units += [(m, ends[key]) for m in pending]
                pending = []
        return units

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass; ``{level: tensor}`` for every level, shallow to deep, the final level last."""
        outs = self.body(x)
        if isinstance(outs, dict):
            outs = list(outs.values())
        return OrderedDict((info.name, t) for info, t in zip(self.feature_info, outs))


def build_timm(params: dict[str, Any], ctx: ModelContext) -> TimmBackbone:
    """Any timm model by ``model_name`` with ``features_only``; levels are its feature_info module names."""
    return TimmBackbone(params)
