"""Search spaces are data: load and validate a YAML file once, then enumerate or sample it.

A search-space file::

    name: seed002_grid
    arch: acml                 # the base architecture (a preset); factors override its fields
    space:                     # factor -> values (a list), or a range for samplers
      channel_factor: [1, 2, 4]
      kernel_size: [3, 5]
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
    protocol:                  # fixed for every trial; see sweep.spec.TrainingProtocol
      dataset: cifar10
      epochs: 10

    exclude:                   # optional: combinations the grid leaves out (each a partial point)
      - {loss: ab_classification, encoding: rgb}

A factor may name an architecture field, a protocol field, or `arch` itself (a list of
presets). A point that matches every key of an `exclude` entry is not in the grid (and a
sampler that draws one has it pruned untrained). Every problem is reported once, as one
line naming the file, the key, the value and what is allowed. Files are read with a safe YAML loader: they never run code. Nothing
here imports Keras.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweep.arch import PRESETS, arch_fields, arch_from_dict, preset
from sweep.errors import SpecError, did_you_mean, must_be
from sweep.files import load_yaml
from sweep.space.grid import Categorical, Range, grid_points, is_grid
from sweep.spec import TrainingProtocol, TrialSpec, protocol_fields, protocol_from_dict, protocol_key_error

__all__ = ["SearchSpace", "load_space"]

TOP_LEVEL_KEYS = ("name", "description", "arch", "space", "protocol", "exclude")
RANGE_KEYS = ("low", "high", "step", "log")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: str
    arch: str  # the base preset
    factors: dict[str, Categorical | Range]
    protocol: TrainingProtocol
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line protocol overrides
    exclude: tuple[dict[str, Any], ...] = ()  # partial points the grid leaves out

    @property
    def is_grid(self) -> bool:
        return is_grid(self.factors)

    def require_grid(self) -> None:
        """Raise SpecError naming the factors that have no grid, if any do."""
        if not self.is_grid:
            sampled = ", ".join(name for name, dim in self.factors.items() if not dim.has_grid)
            raise SpecError(
                f"{self.path}: space: {sampled} is a range to sample (a float range without a step, or a log range), "
                "which has no grid; list its values, or run python -m sweep.optuna on it"
            )

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of factor values, in file order (see `sweep.space.grid`), but
        those an `exclude` entry matches."""
        return [point for point in grid_points(self.factors) if not self.excluded(point)]

    def excluded(self, point: dict[str, Any]) -> bool:
        """Whether an `exclude` entry matches the point (every key of the entry, equal value
        once both are spelt as the grid spells them)."""
        point = self.normalise(point)
        return any(all(k in point and point[k] == v for k, v in self.normalise(entry).items()) for entry in self.exclude)

    def normalise(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point with every factor's value as the grid spells it (`Range.normalise`)."""
        return {k: self.factors[k].normalise(v) if k in self.factors else v for k, v in point.items()}

    def with_protocol(self, *, from_flags: bool = False, **overrides: Any) -> "SearchSpace":
        """The same space with some protocol values replaced (command-line options win over
        factors). With `from_flags`, a bad value is reported as its flag's (`--train-fraction
        1.5: ...`), not the file's."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if from_flags:
            for key, value in overrides.items():
                try:
                    protocol_from_dict({key: value}, self.protocol)
                except SpecError as err:
                    raise SpecError(f"--{key.replace('_', '-')} {value}: {err}") from None
        try:
            protocol = protocol_from_dict(overrides, self.protocol)
        except SpecError as err:
            raise SpecError(f"{self.path}: {err}") from None
        return dataclasses.replace(self, protocol=protocol, overrides={**self.overrides, **overrides})

    def with_repeats(self, repeats: int) -> "SearchSpace":
        """The space with every configuration trained with `repeats` seeds: seed, seed + 1, ...
        (a `seed` factor of the file keeps its values and gains the new ones)."""
        if repeats <= 1:
            return self
        base = self.protocol.seed
        existing = self.factors["seed"].grid() if "seed" in self.factors else (base,)
        seeds = tuple(sorted({seed + offset for seed in existing for offset in range(repeats)}))
        overrides = {k: v for k, v in self.overrides.items() if k != "seed"}
        return dataclasses.replace(self, factors={**self.factors, "seed": Categorical(seeds)}, overrides=overrides)

    def with_arch(self, name: str) -> "SearchSpace":
        """The same space on another base preset (command-line `--arch`): an `arch` factor is
        dropped, and every other factor must be a field of the new preset or the protocol."""
        if name not in PRESETS:
            raise SpecError(f"--arch: {did_you_mean('architecture preset', name, PRESETS)}")
        factors = {k: v for k, v in self.factors.items() if k != "arch"}
        space = dataclasses.replace(self, arch=name, factors=factors)
        _check_factors(space)
        return space

    def spec(self, point: dict[str, Any], data_id: str, native_size: int | None = None) -> TrialSpec:
        """The trial for one point of the space, on data `data_id` whose images are
        `native_size` squares (when known, the key knows that an `image_size` equal to it
        resizes nothing)."""
        arch_name = point.get("arch", self.arch)
        base = preset(arch_name)
        allowed_arch = set(arch_fields(type(base)))
        arch_values = {k: v for k, v in point.items() if k in allowed_arch}
        proto_values = {k: v for k, v in point.items() if k != "arch" and k not in allowed_arch and k not in self.overrides}
        protocol = protocol_from_dict(proto_values, self.protocol)
        return TrialSpec(arch_from_dict(arch_values, base), protocol, data_id, native_size)

    def reference_point(self) -> dict[str, Any] | None:
        """The grid point that is the base preset unchanged (seed 002's "first model"), if any."""
        base = preset(self.arch)
        for point in self.grid_points() if self.is_grid else []:
            if point.get("arch", self.arch) == self.arch:
                arch_values = {k: v for k, v in point.items() if k in arch_fields(type(base))}
                if arch_from_dict(arch_values, base) == base:
                    return point
        return None

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample a point with an Optuna trial (`suggest_categorical`, `suggest_int`,
        `suggest_float`), its values spelt as the grid spells them: the same point from
        either driver is one trial key."""
        point = {}
        for name, dim in self.factors.items():
            if isinstance(dim, Categorical):
                point[name] = trial.suggest_categorical(name, list(dim.values))
            elif dim.is_int:
                point[name] = trial.suggest_int(name, int(dim.low), int(dim.last), step=int(dim.step or 1), log=dim.log)
            else:
                point[name] = trial.suggest_float(name, dim.low, dim.last, step=dim.step, log=dim.log)
        return self.normalise(point)



def _fail(path: str, key: str, message: str) -> SpecError:
    return SpecError(f"{path}: {key}: {message}")


def _parse_factor(path: str, name: str, raw: Any) -> Categorical | Range:
    key = f"space.{name}"
    if isinstance(raw, list):
        if not raw:
            raise _fail(path, key, "an empty list; give at least one value")
        if len(set(map(repr, raw))) != len(raw):
            raise _fail(path, key, f"repeated values in {raw!r}")
        return Categorical(tuple(raw))
    if isinstance(raw, dict):
        for k in raw:
            if k not in RANGE_KEYS:
                raise _fail(path, f"{key}.{k}", did_you_mean("range key", k, RANGE_KEYS))
        if "low" not in raw or "high" not in raw:
            raise _fail(path, key, "a range needs both 'low' and 'high'")
        low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
        for k, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise SpecError(f"{path}: " + must_be(f"{key}.{k}", None, "a number", v))
        if not isinstance(log, bool):
            raise SpecError(f"{path}: " + must_be(f"{key}.log", None, "true or false", log))
        if not low < high:
            raise SpecError(f"{path}: " + must_be(f"{key}.low", None, f"below 'high' ({high!r})", low))
        if step is not None and step <= 0:
            raise SpecError(f"{path}: " + must_be(f"{key}.step", None, "a number > 0", step))
        if log and low <= 0:
            raise _fail(path, key, f"a log range needs low > 0. Got low={low!r}.")
        if log and step is not None:
            raise _fail(path, key, "'step' and 'log' cannot be combined")
        is_int = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
        return Range(low, high, step, log, is_int)
    raise SpecError(f"{path}: " + must_be(key, None, "a list of values or a range {low, high, step, log}", raw))


def _parse_exclude(path: str, raw: Any, factors: dict[str, Categorical | Range]) -> tuple[dict[str, Any], ...]:
    """`exclude:`: a list of mappings, each of factors to one of their values."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"{path}: " + must_be("exclude", None, "a list of mappings of factors to values", raw))
    entries = []
    for i, entry in enumerate(raw):
        key = f"exclude[{i}]"
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"{path}: " + must_be(key, None, "a mapping of factors to values", entry))
        for name, value in entry.items():
            if name not in factors:
                raise _fail(path, f"{key}.{name}", did_you_mean("factor of this space", name, factors))
            dim = factors[name]
            if isinstance(dim, Categorical) and value not in dim.values:
                raise SpecError(f"{path}: " + must_be(f"{key}.{name}", None, f"one of {list(dim.values)}", value))
        entries.append({str(k): v for k, v in entry.items()})
    return tuple(entries)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: search-space file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read the search-space file ({err})") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}{where}: malformed YAML ({problem})") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; raise SpecError naming the file and key."""
    path = Path(path)
    where = str(path)
    raw = _read_yaml(path)
    if raw is None:
        raise SpecError(f"{where}: the file is empty; it needs at least a 'space:' mapping of factors")
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: the top level must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise _fail(where, str(key), did_you_mean("top-level key", key, TOP_LEVEL_KEYS))

    arch = raw.get("arch", "acml")
    if arch not in PRESETS:
        raise _fail(where, "arch", did_you_mean("architecture preset", arch, PRESETS))

    proto_raw = raw.get("protocol") or {}
    if not isinstance(proto_raw, dict):
        raise SpecError(f"{where}: " + must_be("protocol", None, "a mapping of protocol keys", proto_raw))
    for key in proto_raw:
        error = protocol_key_error(key)
        if error:
            raise _fail(where, f"protocol.{key}", error)
    try:
        protocol = protocol_from_dict(proto_raw)
    except SpecError as err:
        raise _fail(where, "protocol", str(err)) from None
    except TypeError as err:
        raise _fail(where, "protocol", str(err)) from None

    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise _fail(where, "space", "no factors; give a mapping of at least one factor to its values")
    factors = {str(name): _parse_factor(where, str(name), value) for name, value in space_raw.items()}
    exclude = _parse_exclude(where, raw.get("exclude"), factors)

    space = SearchSpace(
        name=str(raw.get("name") or path.stem),
        path=where,
        arch=arch,
        factors=factors,
        protocol=protocol,
        description=str(raw.get("description") or ""),
        exclude=exclude,
    )
    _check_factors(space)
    return space


def _check_factors(space: SearchSpace) -> None:
    """Every factor names a known key, and every value it can take makes a valid trial."""
    where = space.path
    arch_choices = list(space.factors["arch"].grid()) if "arch" in space.factors else [space.arch]
    for name in arch_choices:
        if name not in PRESETS:
            raise _fail(where, "space.arch", did_you_mean("architecture preset", name, PRESETS))
    known = {"arch", *protocol_fields()}
    for name in arch_choices:
        known |= set(arch_fields(type(PRESETS[name])))
    for name, dim in space.factors.items():
        if name not in known:
            raise _fail(where, f"space.{name}", did_you_mean("factor", name, known))
        values = dim.grid() if isinstance(dim, Categorical) else (dim.low, dim.last)
        for value in values:
            point = {name: value}
            for arch_name in arch_choices if name != "arch" else [value]:
                if name != "arch" and name not in arch_fields(type(PRESETS[arch_name])) and name not in protocol_fields():
                    raise _fail(where, f"space.{name}", f"is not a field of architecture {arch_name!r}")
                try:
                    space.spec({**point, "arch": arch_name}, data_id="check")
                except SpecError as err:
                    raise _fail(where, f"space.{name}", str(err)) from None
    if space.is_grid:
        for point in space.grid_points():
            try:
                space.spec(point, data_id="check")
            except SpecError as err:
                raise _fail(where, "space", f"the combination {point} is invalid: {err}") from None
    _check_inert(space)


MAX_INERT_POINTS = 20_000  # a larger space is not searched for factors that change nothing


def _check_inert(space: SearchSpace) -> None:
    """Refuse a factor that changes no trial at any point of the space (every point that
    differs from another only in it has that point's trial key), naming what decides instead.
    A factor that changes nothing at some points only (a plateau factor while some points
    turn the plateau off) is kept: those points share one key and run once. Ranges count by
    their ends."""
    dims = {k: dim.grid() if dim.has_grid else (dim.low, dim.last) for k, dim in space.factors.items()}
    if math.prod(len(values) for values in dims.values()) > MAX_INERT_POINTS:
        return
    keys = {}
    for point in grid_points({k: Categorical(tuple(v)) for k, v in dims.items()}):
        if space.excluded(point):
            continue
        try:
            keys[tuple(map(repr, point.values()))] = space.spec(point, data_id="check").key
        except SpecError:
            continue  # (a range's end that the grid never reaches with the others)
    names = list(dims)
    for i, name in enumerate(names):
        if len(dims[name]) < 2:
            continue
        groups: dict[tuple, set[str]] = {}
        sizes: dict[tuple, int] = {}
        for combo, key in keys.items():
            rest = combo[:i] + combo[i + 1 :]
            groups.setdefault(rest, set()).add(key)
            sizes[rest] = sizes.get(rest, 0) + 1
        if any(sizes[rest] > 1 for rest in groups) and all(len(group) == 1 for group in groups.values()):
            raise _fail(space.path, f"space.{name}", f"changes no trial at any point of this space: {_what_decides(space, name)}; leave it out")


def _what_decides(space: SearchSpace, name: str) -> str:
    """Why a factor changes nothing, in the words of the fields that decide instead."""
    protocol = space.protocol
    reasons = {
        "annealed_temperature": "only the loss ab_classification decodes with it",
        "reduce_lr_factor": "reduce_lr_patience decides (the plateau is off, or too patient to lower the rate before the last epoch)",
        "reduce_lr_min": "reduce_lr_patience decides (the plateau is off, or too patient to lower the rate before the last epoch)",
        "reduce_lr_patience": f"epochs ({protocol.epochs}) decides: a patience of epochs - 1 or more lowers the rate only after the last epoch",
        "early_stopping_patience": f"epochs ({protocol.epochs}) decides: a patience of epochs - 1 or more can stop only at the end",
        "output_kernel": "the loss ab_classification decides: its head is a 1x1 convolution whatever the output kernel",
        "last_width": "the output's channels decide: a last width equal to them is the default",
        "batch_norm_from": "filters decide: batch norm from past the last down block is none",
        "dropout": "filters decide: a one-block U-Net has no up block to drop out of",
    }
    return reasons.get(name, "every value builds the same model and trains it the same way")
