"""The deprecation policy in code: a public name removed or renamed keeps a shim that warns for one minor
release (``API_VERSION`` 0.2 keeps the 0.1 names; 0.3 removes them), and CHANGELOG.md says how to migrate."""
from __future__ import annotations

import warnings

API_VERSION = "0.2"
"""The version of the plugin API (medattn.api) as ``"major.minor"``; it equals the package version's first two parts."""


class MedattnDeprecationWarning(FutureWarning):
    """A public name of an earlier plugin API: it still works for one minor release (shown by default, as a
    FutureWarning, so that plugin users see it too)."""


def warn_renamed(old: str, new: str, since: str = API_VERSION, stacklevel: int = 3) -> None:
    """Warn that ``old`` was replaced by ``new`` in version ``since`` (the caller's caller is blamed)."""
    warnings.warn(f"{old} was replaced by {new} in {since}: see CHANGELOG", MedattnDeprecationWarning,
                  stacklevel=stacklevel)
