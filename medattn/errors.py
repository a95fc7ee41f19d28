"""Errors that reach the user as one clear message (no traceback) and exit status 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a file, a field, a path, a device. The CLI prints str(e) and exits 2.

    Give the file (and line) or the config field the problem is in, what was found and what would fix it.
    """


class ConfigError(UserError):
    """One or more problems in an experiment file; ``problems`` holds every rendered line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
