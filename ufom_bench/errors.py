"""The project's error for bad user input: a value, a flag or a file, named in a one-line message; and the
integer check shared by the layers that take counts.

The CLI prints a `UserError` as one line and exits 2; any other exception is a bug and keeps its
traceback. `UserError` subclasses ValueError, so ``except ValueError`` code keeps working.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["UserError", "DataError", "check_choice", "check_int", "check_positive"]


class UserError(ValueError):
    """Bad input from the user (a value, a flag, a path); the message names it."""


class DataError(UserError):
    """A data file is missing, truncated, or not in the expected format (the message names the file)."""


def check_choice(what: str, value, choices):
    """``value`` if it is one of ``choices``, else a UserError naming it and the choices."""
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")
    return value


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``minimum``, else a UserError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {name} = {value!r}")
    return int(value)


def check_positive(name: str, value) -> float:
    """A finite real number > 0 (booleans and strings refused, though float() would take them), else
    UserError naming it."""
    try:
        if isinstance(value, (bool, str, bytes)):  # float() would take True and "0.5"
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a finite number > 0, got {name} = {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise UserError(f"{name} must be a finite number > 0, got {name} = {value!r}")
    return x
