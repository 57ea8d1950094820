"""The exceptions a user sees, and the two message templates every check uses.

A `SweepError` is a problem with the user's input or environment, explained in one line:
the command lines print the message alone (no traceback) and exit with status 2. Its
messages follow two templates, so every check reads the same:

- `must_be`: scikit-learn's "The 'kernel_size' parameter of ArchSpec must be an odd int >= 1.
  Got 4 instead." (for a flag: "--workers must be >= 1. Got 0 instead.")
- `did_you_mean`: "unknown protocol key 'epoch'; did you mean 'epochs'? (allowed: ...)".
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = ["DataError", "SpecError", "StoreError", "SweepError", "did_you_mean", "must_be"]


class SweepError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class SpecError(SweepError, ValueError):
    """An invalid architecture, protocol or search-space value."""


class DataError(SweepError, ValueError):
    """A missing, unreadable, corrupt or unsafe data file."""


class StoreError(SweepError):
    """A results directory or study storage that cannot be used."""


def must_be(field: str, owner: str | None, allowed: str, got: Any) -> str:
    """The message for an invalid value: the field (and its owner: a class or function; none
    for a command-line flag such as `--workers`), what is allowed, and what came."""
    what = f"The '{field}' parameter of {owner}" if owner else field
    return f"{what} must be {allowed}. Got {got!r} instead."


def did_you_mean(what: str, got: Any, allowed: Iterable[Any]) -> str:
    """The message for an unknown name, with the closest allowed one and the full list."""
    choices = sorted(str(a) for a in allowed)
    close = difflib.get_close_matches(str(got), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {got!r}{hint} (allowed: {', '.join(choices)})"
