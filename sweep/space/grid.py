"""The factors of a search space and the grid they span: the one place a space is enumerated.

A factor is a `Categorical` list of values or a `Range`. The grid of a space is every
combination of its factors' values, the first factor varying slowest (`grid_points`).

A range's grid is exactly the set Optuna would sample from: integers from `low` in steps of
`step` (default 1) up to `high`; floats from `low` in steps of `step` up to `high`. Neither
ever leaves [low, high]: a step that does not divide the range stops at the last value
inside it (as Optuna does). A float range without a step, and any `log: true` range, is a
distribution to sample from, not a set of values: it has no grid, and Optuna samples it
(log-uniformly for `log`); to sweep such a factor exhaustively, list its values.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.errors import SpecError

__all__ = ["Categorical", "Range", "grid_points", "is_grid"]


@dataclass(frozen=True)
class Categorical:
    values: tuple[Any, ...]

    @property
    def has_grid(self) -> bool:
        return True

    def grid(self) -> tuple[Any, ...]:
        return self.values

    def normalise(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None = None
    log: bool = False
    is_int: bool = False

    @property
    def has_grid(self) -> bool:
        return not self.log and (self.is_int or self.step is not None)

    def grid(self) -> tuple[Any, ...]:
        """Every value of the range, from `low` up to at most `high`."""
        if self.log:
            raise SpecError("a log range is sampled log-uniformly and has no grid; list the values to sweep instead")
        if self.step is None and not self.is_int:
            raise SpecError("a float range without a step has no grid; give a step or list the values")
        if self.is_int:
            return tuple(range(int(self.low), int(self.last) + 1, int(self.step or 1)))
        return tuple(self._value(i) for i in range(self._steps() + 1))

    def _steps(self) -> int:
        """Whole steps from `low` that stay within `high` (float noise at `high` tolerated)."""
        return math.floor((self.high - self.low) / self.step * (1 + 1e-12))

    def _value(self, i: int) -> float:
        return min(round(self.low + i * self.step, 12), float(self.high))

    def normalise(self, value: Any) -> Any:
        """A value drawn from the range as the grid spells it: an int range's as an int, a
        stepped float range's as its nearest grid value (Optuna's 0.1 + 2 x 0.1 is
        0.30000000000000004; the grid's is 0.3). Other values come back unchanged."""
        if self.log or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if self.is_int:
            return int(value)
        if self.step is None:
            return value
        return self._value(min(max(round((value - self.low) / self.step), 0), self._steps()))

    @property
    def last(self) -> float:
        """The largest value the range can take: `high`, or the last whole step below it."""
        if self.step is None:
            return self.high
        if self.is_int:
            return int(self.low) + (int(self.high) - int(self.low)) // int(self.step) * int(self.step)
        return self._value(self._steps())


def is_grid(factors: Mapping[str, Categorical | Range]) -> bool:
    """Whether every factor has a grid (no float range without a step, no log range)."""
    return all(dim.has_grid for dim in factors.values())


def grid_points(factors: Mapping[str, Categorical | Range]) -> list[dict[str, Any]]:
    """Every combination of factor values, in order (the first factor varies slowest)."""
    names = list(factors)
    return [dict(zip(names, combo)) for combo in itertools.product(*(factors[n].grid() for n in names))]
