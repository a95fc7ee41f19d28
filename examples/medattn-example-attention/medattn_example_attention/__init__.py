"""An example medattn plugin: registration only (plain data, no torch import here)."""
from medattn.api import Component, hookimpl

__version__ = "0.1.0"


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component(
            kind="attention",
            name="spatial_gate",
            factory="medattn_example_attention.gate:build",  # imported only when an experiment selects it
            description="learned spatial gate: last level x sigmoid(conv1x1(last level))",
            params_schema={
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "hidden": {"type": "integer", "minimum": 1, "default": 16,
                               "description": "channels of the gate's hidden 1x1 convolution"},
                },
            },
            defaults={"head": {"name": "linear", "params": {}}},
        )
    ]
