"""The plugin API's version and its promise: a plugin written against 0.1 still runs under 0.2, with a
warning that names the replacement and the changelog."""
from __future__ import annotations

import importlib.metadata as md
import warnings
from pathlib import Path

import pytest
import torch

import medattn
from medattn.api import API_VERSION, MedattnDeprecationWarning
from medattn.components.model import build_model
from medattn.config import load_experiment

OLD_PLUGIN = Path(__file__).with_name("plugin_api_0_1.py")
ROOT = Path(__file__).resolve().parents[1]


def test_api_version_agrees_with_the_package_version_and_the_changelog():
    assert API_VERSION == ".".join(medattn.__version__.split(".")[:2])
    assert md.version("medattn") == medattn.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## Unreleased" in changelog
    assert "## 0.1.0" in changelog and f"`API_VERSION` is `\"{API_VERSION}\"`" in changelog


def old_api_experiment(write, attention: str):
    """An experiment whose attention comes from the plugin written against the 0.1 API."""
    return load_experiment(write("old.yaml", f"""\
        name: old
        plugins: [{OLD_PLUGIN}]
        dataset: {{name: synthetic_lesions, image_size: 32}}
        model:
          backbone: {{name: resnet18, params: {{pretrained: false}}}}
          attention: {attention}
        """))


def test_a_plugin_written_against_the_0_1_api_warns_and_works(write):
    exp = old_api_experiment(write, "{name: old_gate, params: {level: layer3}}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(exp.registry, exp.variants[0].config.data, ["a", "b"])
    said = [str(w.message) for w in caught if issubclass(w.category, MedattnDeprecationWarning)]
    assert "available_levels was replaced by feature_info in 0.2: see CHANGELOG" in said
    assert any(s.startswith("request_levels was replaced by feature_info") for s in said)
    assert any(s.startswith("feature_info[i]['channels'] was replaced by feature_info[i].channels") for s in said)
    assert all(w.filename == str(OLD_PLUGIN) for w in caught if issubclass(w.category, MedattnDeprecationWarning))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)
    assert isinstance(MedattnDeprecationWarning("x"), FutureWarning)  # shown by default, also to plugin users


@pytest.mark.filterwarnings("ignore::medattn.api.MedattnDeprecationWarning")
def test_an_unknown_level_is_still_a_clear_error_through_the_old_api(write):
    from medattn.errors import UserError

    exp = old_api_experiment(write, "{name: old_gate}")
    backbone = build_model(exp.registry, exp.variants[0].config.data, ["a", "b"]).backbone
    with pytest.warns(MedattnDeprecationWarning), pytest.raises(UserError, match="unknown level 'layer9'"):
        backbone.request_levels(["layer9"])
