"""The project's error for bad user input: a value, a flag or a file, named in a one-line message.

The CLI prints a `UserError` as one line and exits 2; any other exception is a bug and keeps its
traceback. `UserError` subclasses ValueError, so ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = ["UserError", "DataError"]


class UserError(ValueError):
    """Bad input from the user (a value, a flag, a path); the message names it."""


class DataError(UserError):
    """A data file is missing, truncated, or not in the expected format (the message names the file)."""
