"""The linear reference: the best linear autoencoder (PCA) of each latent size in a sweep,
fitted on the very training images the trials trained on. The one part of the analysis that
reads image data."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from sweep.analysis.stats import complete, plain
from sweep.data import CIFAR, keras_cache_folder, load_dataset, make_splits
from sweep.errors import DataError, SpecError
from sweep.metrics import mse

__all__ = ["pca_reference", "recorded_data_dirs"]


def recorded_data_dirs(results_dir: str | Path) -> list[str]:
    """The `--data-dir` values of the sweep invocations recorded in `results_dir/runs/` (newest
    first), so the analysis can find the images the trials trained on."""
    found = []
    for path in sorted(Path(results_dir, "runs").glob("*.json"), reverse=True):
        try:
            argv = json.loads(path.read_text()).get("argv") or []
        except (OSError, json.JSONDecodeError):
            continue
        argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        for i, arg in enumerate(argv):
            value = arg.split("=", 1)[1] if arg.startswith("--data-dir=") else argv[i + 1] if arg == "--data-dir" and i + 1 < len(argv) else None
            if value and value not in found:
                found.append(value)
    return found


def _matching_dataset(name: str, data_id: str, data_dirs: Sequence[str | None]):
    """The dataset `name` whose content hash is `data_id`, from the first candidate folder that
    has it (never downloads)."""
    if name == "synthetic":
        candidates: list[str | None] = [None]
    elif name in CIFAR:
        candidates = [d for d in data_dirs if d] + [str(keras_cache_folder(name))]
    else:
        raise DataError(f"no linear reference for dataset {name!r}")
    seen = []
    for folder in candidates:
        try:
            dataset = load_dataset(name, folder)
        except DataError:
            continue
        if dataset.data_id == data_id:
            return dataset
        seen.append(f"{folder}: {dataset.data_id}")
    where = "; ".join(seen) or ", ".join(str(c) for c in candidates)
    raise DataError(f"the {name} images the trials used ({data_id}) are not in any data folder tried ({where}); pass --data-dir")


def pca_reference(frame: pd.DataFrame, data_dirs: str | Sequence[str] | None = None, latent_sizes: Iterable[int] | None = None) -> pd.DataFrame:
    """The best linear autoencoder of each latent size in the sweep: PCA fitted on the very
    training images the trials trained on, evaluated on their test images, in the trials' MSE
    convention (reconstructions clipped to [0, 1], mean over every value).

    For each group of reconstruction trials sharing data and split (dataset, data_id,
    train_fraction, val_fraction, train_limit, image_size), the training split is rebuilt with
    `sweep.data.make_splits`, centred, and decomposed by SVD; a latent size k keeps the first
    k principal directions. Two limits need care:

    - k >= D (the number of values per image, 3072 for CIFAR): the identity is a linear
      autoencoder of that size, so the reference error is 0 ("identity"; not drawable on log axes);
    - rank <= k < D, rank = the training set's rank (at most n_train - 1): PCA has no more
      directions to give, and every extra direction is equally optimal on the training set, so
      the reference uses all `rank` directions ("capped"): the error of the best linear code
      the training images determine, not a lower bound for that k.

    `data_dirs` are folders to look for CIFAR in (`recorded_data_dirs` finds the sweep's own);
    the images are checked against the trials' `data_id`, so a wrong folder raises DataError.
    Columns: dataset, data_id, train_fraction, latent_size, components, n_train, kind, pca_mse.
    """
    done = complete(frame)
    if "task" in done.columns:
        done = done[done["task"].isna() | (done["task"] == "reconstruct")]
    if isinstance(data_dirs, (str, Path)) or data_dirs is None:
        data_dirs = [str(data_dirs)] if data_dirs else []
    keys = ["dataset", "data_id", "train_fraction", "val_fraction", "train_limit", "image_size"]
    for key in keys:
        if key not in done.columns:
            raise SpecError(f"the results have no {key!r} column, which the linear reference needs")
    rows = []
    for group_key, group in done.groupby(keys, dropna=False, sort=False):
        dataset_name, data_id, train_fraction, val_fraction, train_limit, image_size = (plain(v) for v in group_key)
        dataset = _matching_dataset(dataset_name, data_id, list(data_dirs))
        splits = make_splits(
            dataset, float(train_fraction), float(val_fraction),
            int(train_limit) if train_limit is not None else None, int(image_size) if image_size is not None else None,
        )  # fmt: skip
        train = splits.train.reshape(len(splits.train), -1).astype(np.float64)
        test = splits.test.reshape(len(splits.test), -1).astype(np.float64)
        mean = train.mean(axis=0)
        _, singular, components = np.linalg.svd(train - mean, full_matrices=False)
        rank = int((singular > singular[0] * 1e-10).sum()) if singular.size else 0
        centred = test - mean
        sizes = sorted({int(k) for k in (latent_sizes if latent_sizes is not None else group["latent_size"].dropna())})
        dims = train.shape[1]
        for k in sizes:
            if k >= dims:
                kind, used, error = "identity", dims, 0.0
            else:
                used = min(k, rank)
                kind = "exact" if used == k else "capped"
                basis = components[:used]
                recon = np.clip(mean + (centred @ basis.T) @ basis, 0.0, 1.0)
                error = mse(test, recon)
            rows.append({
                "dataset": dataset_name, "data_id": data_id, "train_fraction": train_fraction,
                "latent_size": k, "components": used, "n_train": len(train), "kind": kind, "pca_mse": error,
            })  # fmt: skip
    columns = ["dataset", "data_id", "train_fraction", "latent_size", "components", "n_train", "kind", "pca_mse"]
    return pd.DataFrame(rows, columns=columns)
