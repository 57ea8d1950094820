"""Packed training: several small trials in one compiled step, so an accelerator is kept busy.

The grid's models are tiny; trained one at a time, a GPU spends most of each step waiting
for kernel launches and Python. `python -m sweep.grid --pack K` groups the trials into
packs of up to K that share a protocol and a dataset and trains each pack as one model
(`sweep.trial.run_pack`): same batches, disjoint parameters, one summed loss, so every
member's gradients and Adam updates are exactly its own and its row means what a separate
trial's row means.

Packs are balanced by FLOPs (longest-processing-time first), so workers that take packs
from one queue finish together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from sweep.schedule import MAX_ATTEMPTS, RUN_ID, TrialJob, _clear_attempts, _count_attempt

__all__ = ["PackJob", "make_packs", "spec_flops", "trial_forward_flops"]

SPLIT_FILE = "pack-split"  # in a trial's directory: its pack killed a worker in this run


def _split_in_run(directory: Any, run_id: str) -> bool:
    try:
        return (directory / SPLIT_FILE).read_text() == run_id
    except OSError:
        return False


def trial_forward_flops(spec: Any, image_shape: tuple[int, ...]) -> int:
    """Forward FLOPs per image of a trial's model on images of `image_shape` (H, W, ...),
    with its task's input and output channels."""
    from sweep.arch import forward_flops
    from sweep.encodings import task_for

    task = task_for(spec.protocol.task, spec.protocol.encoding, spec.protocol.loss)
    return forward_flops(spec.arch, (*image_shape[:2], task.input_channels), task.output_channels)


def spec_flops(spec: Any, image_shape: tuple[int, ...]) -> int:
    """Training FLOPs per image of a trial's model: about 3x the forward pass (forward, and
    a backward pass twice as costly)."""
    return 3 * trial_forward_flops(spec, image_shape)


def make_packs(specs: list[Any], size: int, cost: Callable[[Any], float]) -> list[list[Any]]:
    """Group `specs` into packs of at most `size` that share a protocol and a dataset, as few
    packs as that allows, with their total `cost` as even as possible; the costliest pack
    first. Trials that cannot be packed (see `sweep.trial.packable`) are packs of one."""
    from sweep.trial import packable

    if size < 1:
        raise ValueError(f"pack size must be >= 1, got {size}")
    groups: dict[tuple, list[Any]] = {}
    singles = []
    for spec in specs:
        if size > 1 and packable(spec):
            groups.setdefault((spec.protocol, spec.data_id), []).append(spec)
        else:
            singles.append([spec])
    packs = []
    for members in groups.values():
        count = math.ceil(len(members) / size)
        bins: list[list[Any]] = [[] for _ in range(count)]
        totals = [0.0] * count
        for spec in sorted(members, key=cost, reverse=True):
            # The lightest pack with room; a full pack takes nothing more.
            i = min((i for i in range(count) if len(bins[i]) < size), key=lambda i: totals[i])
            bins[i].append(spec)
            totals[i] += cost(spec)
        packs.extend(bins)
    packs.extend(singles)
    return sorted(packs, key=lambda pack: sum(cost(s) for s in pack), reverse=True)


@dataclass(frozen=True)
class PackJob:
    """Train a pack of trials together and store every member's row.

    A pack that ran out of memory, or whose worker died, is not packed again: its members
    then run one by one as ordinary trials, each with its own attempt count, so only one
    that kills its worker alone is recorded as failed."""

    specs: tuple  # TrialSpec, ...
    data_dir: str | None
    results_dir: str
    row_extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every_s: float = 10.0
    run_id: str = RUN_ID

    @property
    def size(self) -> int:
        return len(self.specs)

    def __call__(self) -> list[dict[str, Any]]:
        from sweep.data import dataset_for
        from sweep.store import write_row
        from sweep.trial import run_pack, trial_dir

        if len(self.specs) == 1:
            return [self._alone(self.specs[0])]
        dirs = [trial_dir(self.results_dir, spec.key) for spec in self.specs]
        split = any(_split_in_run(d, self.run_id) for d in dirs)
        if not split and max(_count_attempt(d, self.run_id) for d in dirs) > 1:
            for d in dirs:  # this pack killed a worker before: isolate its members from now on
                _clear_attempts(d)
                (d / SPLIT_FILE).write_text(self.run_id)
            split = True
        if split:
            return [self._alone(spec) for spec in self.specs]
        dataset = dataset_for(self.specs[0].protocol, self.data_dir)
        packed = run_pack(list(self.specs), dataset, self.results_dir)
        if all(str(row.get("error") or "").startswith("out of memory") for row in packed):
            for d in dirs:  # together they do not fit: each may alone
                _clear_attempts(d)
                (d / SPLIT_FILE).write_text(self.run_id)
            return [self._alone(spec) for spec in self.specs]
        rows = []
        for row, d in zip(packed, dirs):
            row = {**row, **self.row_extra}
            write_row(self.results_dir, row)
            _clear_attempts(d)
            rows.append(row)
        return rows

    def _alone(self, spec: Any) -> dict[str, Any] | None:
        job = TrialJob(spec, self.data_dir, self.results_dir, self.row_extra, self.checkpoint_every_s, self.run_id)
        return job()


assert MAX_ATTEMPTS >= 2, "an isolated pack member must get at least one attempt of its own"
