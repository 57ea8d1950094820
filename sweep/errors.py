"""The one exception type a user sees, and the rule for showing it."""

from __future__ import annotations


class SweepError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The command-line drivers print the message alone (no traceback) and exit with code 2.
    Subclasses `ValueError` semantics where the input is at fault, so library callers can
    catch either.
    """


class SpecError(SweepError, ValueError):
    """An invalid architecture, protocol or search-space value."""


class DataError(SweepError, ValueError):
    """A missing, unreadable, corrupt or unsafe data file."""


class StoreError(SweepError):
    """A results directory that cannot be used."""
