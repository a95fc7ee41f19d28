"""Errors that reach the user as one clear message (no traceback) and exit status 2."""
from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input from the user: a file, a field, a path, a device. The CLI prints str(e) and exits 2.

    Give the file (and line) or the config field the problem is in, what was found and what would fix it.
    """


class ConfigError(UserError):
    """One or more problems in an experiment file; ``problems`` holds every rendered line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class MedattnWarning(UserWarning):
    """Something the user allowed but should know about; the CLI prints it as one ``medattn: warning:`` line."""


class NotApplicable(Exception):
    """Raised by a component that has nothing to say for this model (e.g. attention maps without attention)."""


EXIT_BAD_INPUT = 2


def render_error(exc: BaseException) -> str:
    """The text shown for bad input (every problem of a config) or an OS error; never a traceback."""
    if isinstance(exc, ConfigError):
        n = len(exc.problems)
        return "\n".join([f"medattn: {n} problem{'s' if n != 1 else ''} in the experiment:",
                          *(f"  {line}" for line in exc.problems)])
    if isinstance(exc, UserError):
        return f"medattn: error: {user_message(exc)}"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"medattn: error: {exc.strerror or exc}{where}"
    return f"medattn: error: {exc}"


def user_message(exc: UserError) -> str:
    """The message of a UserError, unwrapped when a DataLoader worker re-raised it with its traceback text."""
    text = str(exc)
    if "Original Traceback" in text:  # torch's ExceptionWrapper: keep the original error's last line
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.split(":", 1)[0].endswith("Error") else last
    return text


def failure_reason(exc: BaseException) -> str:
    """``Type: message``, or for a bare assertion the library line that failed (``halo_attn.py:208: ...``)."""
    if str(exc):
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    import traceback
    from pathlib import Path

    torch = sys.modules.get("torch")  # frames inside torch itself say little; the library's own line says more
    root = Path(torch.__file__).parent if torch is not None and torch.__file__ else None
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if root is None or root not in Path(f.filename).parents] or frames
    if not inside:
        return type(exc).__name__
    last = inside[-1]
    return f"{type(exc).__name__} in {Path(last.filename).name}:{last.lineno}: {last.line}"
