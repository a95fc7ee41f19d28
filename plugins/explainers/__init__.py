"""Built-in explainers plugins."""
from medattn.hookspecs import Component, hookimpl


@hookimpl
def medattn_components() -> list[Component]:
    return []
