"""Level tables of the torchvision backbones: plain data, importable without torch (used by the schemas)."""
from __future__ import annotations

from typing import Any


def _resnet_levels(blocks: list[int], widths: list[int]) -> list[dict[str, Any]]:
    """Levels of a torchvision ResNet: every block but the last of a stage as ``layerN.i``, then ``layerN``."""
    levels: list[dict[str, Any]] = []
    for stage, (n, width) in enumerate(zip(blocks, widths), start=1):
        reduction = 2 ** (stage + 1)
        for i in range(n - 1):
            levels.append({"name": f"layer{stage}.{i}", "node": f"layer{stage}.{i}", "channels": width,
                           "reduction": reduction})
        levels.append({"name": f"layer{stage}", "node": f"layer{stage}.{n - 1}", "channels": width,
                       "reduction": reduction})
    levels.append({"name": "avgpool", "node": "avgpool", "channels": widths[-1], "reduction": None})
    return levels


def _densenet121_levels() -> list[dict[str, Any]]:
    table = [("denseblock1", 256, 4), ("transition1", 128, 8), ("denseblock2", 512, 8), ("transition2", 256, 16),
             ("denseblock3", 1024, 16), ("transition3", 512, 32), ("denseblock4", 1024, 32), ("norm5", 1024, 32)]
    return [{"name": n, "node": f"features.{n}", "channels": c, "reduction": r} for n, c, r in table]


def _vgg16_levels() -> list[dict[str, Any]]:
    # torchvision vgg16 ``features`` indices; conv levels are the post-ReLU outputs (as in Keras).
    table = [("pool3", 16, 256, 8), ("conv4_1", 18, 512, 8), ("conv4_3", 22, 512, 8), ("pool4", 23, 512, 16),
             ("conv5_1", 25, 512, 16), ("conv5_3", 29, 512, 16), ("pool5", 30, 512, 32)]
    return [{"name": n, "node": f"features.{i}", "channels": c, "reduction": r} for n, i, c, r in table]


# arch -> spec. ``final``: default deepest level; ``cam``: default Grad-CAM level (a leaf module called once);
# ``stem``: dotted name of the first conv; ``classifier``: the module replaced by Identity (never used).
TORCHVISION_ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": {"builder": "resnet18", "weights_enum": "ResNet18_Weights", "weights_tag": "IMAGENET1K_V1",
                 "levels": _resnet_levels([2, 2, 2, 2], [64, 128, 256, 512]), "final": "layer4",
                 "cam": "layer4", "stem": "conv1", "classifier": "fc"},
    "resnet50": {"builder": "resnet50", "weights_enum": "ResNet50_Weights", "weights_tag": "IMAGENET1K_V1",
                 "levels": _resnet_levels([3, 4, 6, 3], [256, 512, 1024, 2048]), "final": "avgpool",
                 "cam": "layer4", "stem": "conv1", "classifier": "fc"},
    "densenet121": {"builder": "densenet121", "weights_enum": "DenseNet121_Weights", "weights_tag": "IMAGENET1K_V1",
                    "levels": _densenet121_levels(), "final": "norm5", "cam": "norm5", "stem": "features.conv0",
                    "classifier": "classifier"},
    "vgg16": {"builder": "vgg16", "weights_enum": "VGG16_Weights", "weights_tag": "IMAGENET1K_V1",
              "levels": _vgg16_levels(), "final": "pool5", "cam": "conv5_3", "stem": "features.0",
              "classifier": "classifier"},
}


def level_names(arch: str) -> list[str]:
    """Level names of a torchvision arch, shallow to deep."""
    return [lv["name"] for lv in TORCHVISION_ARCHS[arch]["levels"]]
