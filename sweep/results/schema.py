"""The results schema: every column of a results row, its type, and what it means.

This is the one declaration of a row. The store checks rows against it and orders the
DataFrame by it; the drivers' Optuna objectives and pruning, the analysis and the report
read from it which columns are metrics, which way each is better, and which validation
value tracks each one epoch by epoch. A new column is declared here or it cannot be stored.

Groups, in the order a DataFrame shows them:

=============  ===================================================================
group          columns
=============  ===================================================================
identity       trial_key, config_key (the key without the seed), data_id, preset
arch           `family` and every field of every architecture family
protocol       every field of `TrainingProtocol`
outcome        status, error, epochs_run, best_epoch, stop_reason, history, ...
size           latent_size, params, n_train, n_val, n_test
metric         val_/test_ MSE, MAE, PSNR, SSIM; colour error, colourfulness
baseline       test_gray_*: the grayscale baseline's scores (colorization)
time           train_seconds, eval_seconds, wall_seconds
run            driver, space, varied, study_name, optuna_trial, optuna_state, pack_size
provenance     started_at, finished_at, host, device, backend, versions, code_version, spec
=============  ===================================================================

A column with a `goal` ("minimize" or "maximize") can be an Optuna objective; one with
`per_epoch` names the validation value measured after every epoch that tracks it, which is
what a pruner reads (test metrics are tracked by their validation twin: the test split is
never looked at during training). Objectives without a per-epoch value (latent size,
parameters, time) cannot be pruned on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable

from sweep.arch import ARCH_FAMILIES, preset_name
from sweep.spec import TrainingProtocol, TrialSpec

__all__ = [
    "COLUMNS",
    "Column",
    "IDENTITY",
    "METRICS",
    "OBJECTIVES",
    "PROTOCOL_DEFAULTS",
    "STATUSES",
    "goal",
    "higher_is_better",
    "metric_label",
    "per_epoch_metric",
    "spec_columns",
    "unknown_columns",
    "varied_text",
]

STATUSES = ("complete", "failed", "pruned")
# A protocol field's value in rows written before the field existed: its default, which is
# what those trials did (fields whose default is None read None from a missing value anyway).
PROTOCOL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainingProtocol) if f.default is not None}
DTYPES = ("str", "int", "float", "bool", "json")  # json: text holding a JSON value


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # one of DTYPES
    group: str
    doc: str
    goal: str | None = None  # "minimize" or "maximize": which way is better
    per_epoch: str | None = None  # the validation value that tracks it after each epoch
    core: bool = False  # every DataFrame has it, whatever rows exist
    label: str | None = None  # an axis label with units


_IMAGE_METRICS = {  # name: (goal, label)
    "mse": ("minimize", "MSE (mean squared error per value, RGB in [0, 1])"),
    "mae": ("minimize", "MAE (mean absolute error per value, RGB in [0, 1])"),
    "psnr": ("maximize", "PSNR (dB)"),
    "ssim": ("maximize", "SSIM (mean over images)"),
}
_COLOUR_METRICS = {  # name: (goal, label, doc)
    "ab_rmse": ("minimize", "ab RMSE (CIE Lab)", "root mean squared per-pixel ab distance in CIE Lab"),
    "ab_auc": ("maximize", "ab AuC", "fraction of pixels within an ab distance, integrated over 0-150, in [0, 1]"),
    "colorfulness": (None, "colourfulness (Hasler-Suesstrunk)", "mean Hasler-Suesstrunk colourfulness of the prediction"),
    "colorfulness_truth": (None, "colourfulness of the truth", "the same of the ground truth"),
    "a_slope": (None, "a* slope, predicted on true", "least-squares slope of the predicted a* on the true a*, over every pixel (1: full range, 0: one colour)"),
    "b_slope": (None, "b* slope, predicted on true", "the same for b*"),
    "a_corr": ("maximize", "a* correlation, predicted with true", "Pearson correlation of the predicted and true a* over every pixel"),
    "b_corr": ("maximize", "b* correlation, predicted with true", "the same for b*"),
    "a_bias": (None, "a* bias (predicted - true mean)", "mean predicted a* minus mean true a* (a colour cast; > 0 red)"),
    "b_bias": (None, "b* bias (predicted - true mean)", "mean predicted b* minus mean true b* (a colour cast; > 0 yellow)"),
}


def _dtype(annotation: Any) -> str:
    """The column type of a spec field from its annotation (a string under postponed
    evaluation): `int | None` is an int column; tuples are stored as JSON lists."""
    name = str(annotation).split("|")[0].strip()
    return name if name in ("bool", "int", "float", "str") else "json"


def _field_columns() -> list[Column]:
    columns = [Column("family", "str", "arch", "the architecture family", core=True)]
    seen = {"family"}
    for spec_type in ARCH_FAMILIES.values():
        for f in dataclasses.fields(spec_type):
            if f.name not in seen:
                seen.add(f.name)
                core = spec_type.family == "conv_ae" and f.name != "base_channels"  # seed 002's factors
                columns.append(Column(f.name, _dtype(f.type), "arch", f"architecture field ({spec_type.__name__})", core=core))
    for f in dataclasses.fields(TrainingProtocol):
        core = f.name in ("dataset", "task", "encoding", "epochs", "train_fraction", "batch_size", "optimizer", "learning_rate", "loss", "seed")
        columns.append(Column(f.name, _dtype(f.type), "protocol", "protocol field", core=core))
    return columns


def _metric_columns() -> list[Column]:
    columns = []
    for split in ("val", "test"):
        for name, (goal, label) in _IMAGE_METRICS.items():
            core = split == "test" or name == "mse"
            columns.append(
                Column(f"{split}_{name}", "float", "metric", f"{label} on the {split} split, clipped RGB",
                       goal=goal, per_epoch=f"val_{name}", core=core, label=f"{split} {label}")
            )  # fmt: skip
    for name, (goal, label, doc) in _COLOUR_METRICS.items():
        columns.append(Column(f"test_{name}", "float", "metric", f"{doc} (test split, colorization)", goal=goal, core=True, label=f"test {label}"))
    for name, (goal, label) in _IMAGE_METRICS.items():
        core = name in ("psnr", "ssim")
        columns.append(Column(f"test_gray_{name}", "float", "baseline", f"the grayscale baseline's {label}", core=core, label=f"grayscale {label}"))
    for name, (goal, label, doc) in _COLOUR_METRICS.items():
        core = name in ("ab_rmse", "ab_auc")
        columns.append(Column(f"test_gray_{name}", "float", "baseline", f"the grayscale baseline's {label}", core=core, label=f"grayscale {label}"))
    return columns


COLUMNS: tuple[Column, ...] = (
    Column("trial_key", "str", "identity", "hash of the effective configuration and data (`TrialSpec.key`)", core=True),
    Column("config_key", "str", "identity", "the trial key without the seed: replicates share it", core=True),
    Column("data_id", "str", "identity", "content hash of the dataset as loaded", core=True),
    Column("preset", "str", "identity", "the preset's name when the architecture is one unchanged", core=True),
    *_field_columns(),
    Column("status", "str", "outcome", f"one of {', '.join(STATUSES)}", core=True),
    Column("error", "str", "outcome", "why a failed trial failed (error.txt has the traceback)", core=True),
    Column("epochs_run", "int", "outcome", "epochs trained", core=True),
    Column("best_epoch", "int", "outcome", "the epoch (1-based) of the lowest validation loss, whose weights are evaluated", core=True),
    Column("stop_reason", "str", "outcome", "why training stopped before its epochs: early_stopping, pruned, nan", core=True),
    Column("resumed_from_epoch", "int", "outcome", "the epoch a checkpoint resumed the trial from"),
    Column("history", "json", "outcome", "per-epoch loss, val_loss and lr", core=True),
    Column("latent_size", "int", "size", "values in the latent tensor", goal="minimize", core=True, label="latent size (values)"),
    Column("params", "int", "size", "model parameters", goal="minimize", core=True, label="parameters"),
    Column("n_train", "int", "size", "training images", core=True),
    Column("n_val", "int", "size", "validation images", core=True),
    Column("n_test", "int", "size", "test images", core=True),
    *_metric_columns(),
    Column("chroma_gain", "float", "metric", "the chroma gain s* fitted on the validation split at the end of training (colorization): "
           "the scale of the decoded chroma about gray that minimises the RGB error (sweep.chroma); the other metrics are at gain 1", label="calibrated chroma gain s*"),
    Column("test_psnr_at_gain", "float", "metric", "test PSNR at the calibrated chroma gain", label="test PSNR at s* (dB)"),
    Column("test_colorfulness_at_gain", "float", "metric", "test colourfulness at the calibrated chroma gain", label="test colourfulness at s*"),
    Column("test_a_bias_at_gain", "float", "metric", "test a* bias at the calibrated chroma gain", label="test a* bias at s*"),
    Column("test_b_bias_at_gain", "float", "metric", "test b* bias at the calibrated chroma gain", label="test b* bias at s*"),
    Column("gain_curve", "json", "outcome", "test PSNR and colourfulness along chroma gains (0 to 2.5 s*, and 0.25 to 4): "
           '{"gain": [...], "psnr": [...], "colorfulness": [...]}'),
    Column("train_seconds", "float", "time", "seconds in training steps and per-epoch validation", goal="minimize", core=True, label="training time (s)"),
    Column("eval_seconds", "float", "time", "seconds evaluating and writing artefacts"),
    Column("wall_seconds", "float", "time", "seconds of the whole trial", core=True),
    Column("driver", "str", "run", "the command that ran the trial: grid, optuna, bench", core=True),
    Column("space", "str", "run", "the search space's name", core=True),
    Column("varied", "json", "run", "the factors its search space or study varied (a JSON list): fields the analysis never splits comparable groups by", core=True),
    Column("study_name", "str", "run", "the Optuna study of the trial", core=True),
    Column("optuna_trial", "int", "run", "the trial's number in that study", core=True),
    Column("optuna_state", "str", "run", "the state told to the study: COMPLETE, PRUNED, FAIL", core=True),
    Column("pack_size", "int", "run", "trials trained together in one compiled step"),
    Column("started_at", "str", "provenance", "UTC start time (ISO 8601)", core=True),
    Column("finished_at", "str", "provenance", "UTC end time (ISO 8601)", core=True),
    Column("host", "str", "provenance", "host name", core=True),
    Column("device", "str", "provenance", "cpu, or the accelerator's name", core=True),
    Column("backend", "str", "provenance", "the Keras backend", core=True),
    Column("versions", "json", "provenance", "versions of every library that changes a number", core=True),
    Column("code_version", "str", "provenance", "git describe of the sweep checkout", core=True),
    Column("spec", "json", "provenance", "the trial's architecture, protocol and data id", core=True),
)

_BY_NAME = {c.name: c for c in COLUMNS}
assert len(_BY_NAME) == len(COLUMNS), "a column is declared twice"

# Quality metrics (mean and spread over replicates in the analysis).
METRICS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.group == "metric")
# Columns an Optuna study can optimise, and which way.
OBJECTIVES: dict[str, str] = {c.name: c.goal for c in COLUMNS if c.goal is not None}
# What defines a configuration apart from its seed (for rows written before config_key).
IDENTITY: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.group in ("arch", "protocol") and c.name != "seed") + ("data_id",)


def goal(name: str) -> str | None:
    """'minimize', 'maximize', or None for a column with no better direction."""
    found = _BY_NAME.get(name)
    return found.goal if found else None


def higher_is_better(name: str) -> bool:
    """PSNR, SSIM and ab AuC grow with quality; errors, sizes and times shrink."""
    return goal(name) == "maximize"


def per_epoch_metric(name: str) -> str | None:
    """The validation value measured after every epoch that tracks the column `name`, or
    None when it has none (sizes, times, colour metrics)."""
    found = _BY_NAME.get(name)
    return found.per_epoch if found else None


def metric_label(name: str) -> str:
    """An axis label with units: `test_mse` -> 'test MSE (mean squared error per value, ...)'."""
    found = _BY_NAME.get(name)
    return found.label if found is not None and found.label else name


def unknown_columns(names: Iterable[str]) -> list[str]:
    """The names that are not columns of the schema."""
    return [name for name in names if name not in _BY_NAME]


def varied_text(factors: Iterable[str]) -> str:
    """The `varied` cell of a trial of a space or study with these factors."""
    return json.dumps(sorted(factors))


def spec_columns(spec: TrialSpec) -> dict[str, Any]:
    """The columns a row has before training: identity, architecture and protocol."""
    return {
        "trial_key": spec.key,
        "config_key": spec.config_key,
        "data_id": spec.data_id,
        "preset": preset_name(spec.arch),
        **spec.arch.to_dict(),
        **spec.protocol.to_dict(),
        "spec": json.dumps(spec.to_dict(), sort_keys=True),
    }

