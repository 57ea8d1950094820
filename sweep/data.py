"""Datasets: CIFAR-10/100 from their official python folders, a synthetic set, and splits.

The official CIFAR files are pickles. They are read with `SafeUnpickler`, which admits only
the three numpy functions that rebuild an array, so a data file can never run code. The
loaded arrays are checked (types, shapes, sizes) and every problem is reported as one
`DataError` line that names the file.

Datasets are cached per process (`load_dataset`), so a worker that runs many trials reads
its data once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import DataError
from sweep.faults import failpoint

__all__ = ["Dataset", "Splits", "SafeUnpickler", "load_dataset", "make_splits", "read_cifar_file"]

CIFAR = {
    # name: (folder, training files, test files, label key, download url, sha256)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "fine_labels",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    ),
}
SPLIT_SEED = 20200401  # fixed, so replicates of a configuration (other seeds) share one split


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per loaded dataset
class Dataset:
    """Images as uint8 arrays of shape (N, H, W, 3), and where they came from."""

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    source: str

    @functools.cached_property
    def data_id(self) -> str:
        """A content hash: equal data, equal id, wherever the files live."""
        digest = hashlib.blake2b(digest_size=8)
        for array in (self.x_train, self.x_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).data)
        return f"{self.name}-{len(self.x_train)}-{len(self.x_test)}-{digest.hexdigest()}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class Splits:
    """float32 images in [0, 1]: training, validation (carved from training) and test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


class UnsafePickleError(pickle.UnpicklingError):
    """A data file asked to load something other than a numpy array."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and nothing that could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how python-3 numpy pickles an array's bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return super().find_class(module, name)


def read_cifar_file(path: Path, label_key: str) -> np.ndarray:
    """One official CIFAR batch file -> uint8 images (N, 32, 32, 3), checked."""
    try:
        with open(path, "rb") as handle:
            batch = SafeUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnsafePickleError as err:
        raise DataError(f"{path}: not a CIFAR data file ({err})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as err:
        raise DataError(f"{path}: truncated or corrupt CIFAR file ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with 'data' and '{label_key}', got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072) (32x32x3 images), got {got}")
    if labels is None or len(labels) != len(data):
        raise DataError(f"{path}: expected {len(data)} '{label_key}' entries, one per image")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_folder(name: str, data_dir: str | None) -> Path:
    folder = CIFAR[name][0]
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for candidate in (root / folder, root):
            if (candidate / CIFAR[name][1][0]).exists():
                return candidate
        if not root.exists():
            raise DataError(f"--data-dir {data_dir}: no such directory; it should hold {folder}/")
        raise DataError(
            f"--data-dir {data_dir}: no {folder}/ with the official {name} python-format files; "
            f"pass the folder that holds {folder}/, or leave --data-dir out to download through Keras"
        )
    return _download(name)


def _download(name: str) -> Path:
    folder, _, _, _, url, sha256 = CIFAR[name]
    target = f"{folder}-target"  # the cache folder keras.datasets uses, so its downloads are shared
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / target / folder
    if not (cache / CIFAR[name][1][0]).exists():
        try:
            from keras.utils import get_file

            get_file(fname=target, origin=url, extract=True, file_hash=sha256)
        except Exception as err:  # no network, a proxy, a full disk: one line, and what to pass
            raise DataError(
                f"could not download {name} through Keras ({type(err).__name__}: {err}); "
                f"pass --data-dir DIR where DIR holds {folder}/ (the official python-format folder)"
            ) from None
    if not (cache / CIFAR[name][1][0]).exists():
        raise DataError(f"the Keras download of {name} left no {folder}/ under {cache.parent}; pass --data-dir")
    return cache


def _synthetic(n_train: int = 512, n_test: int = 128, size: int = 32) -> Dataset:
    """Smooth random colour images: offline, deterministic, and learnable by a small model."""
    rng = np.random.default_rng(12345)
    n = n_train + n_test
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    freq = rng.uniform(0.5, 3.0, size=(n, 3, 2, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 3, 1, 1)).astype(np.float32)
    waves = np.sin(2 * np.pi * (freq[:, :, 0] * xx + freq[:, :, 1] * yy) + phase)
    base = rng.uniform(0.2, 0.8, size=(n, 3, 1, 1)).astype(np.float32)
    images = np.clip(base + 0.25 * waves, 0.0, 1.0).transpose(0, 2, 3, 1)
    images = (images * 255).round().astype(np.uint8)
    return Dataset("synthetic", images[:n_train], images[n_train:], "synthetic (seeded)")


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a dataset once per process. `data_dir=None` downloads CIFAR through Keras."""
    failpoint("data.load")
    if name == "synthetic":
        return _synthetic()
    if name not in CIFAR:
        raise DataError(f"unknown dataset {name!r} (allowed: cifar10, cifar100, synthetic)")
    folder = _cifar_folder(name, data_dir)
    _, train_files, test_files, label_key, _, _ = CIFAR[name]
    x_train = np.concatenate([read_cifar_file(folder / f, label_key) for f in train_files])
    x_test = np.concatenate([read_cifar_file(folder / f, label_key) for f in test_files])
    return Dataset(name, x_train, x_test, str(folder))


def make_splits(
    dataset: Dataset,
    train_fraction: float,
    val_fraction: float,
    train_limit: int | None = None,
    image_size: int | None = None,
) -> Splits:
    """Select `train_fraction` of the training images (deterministic shuffle), carve
    `val_fraction` of those off as validation, and scale everything to float32 [0, 1]."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(dataset.x_train))
    n_selected = max(2, int(round(train_fraction * len(order))))
    if train_limit is not None:
        n_selected = min(n_selected, train_limit)
    selected = order[:n_selected]
    n_val = max(1, int(round(val_fraction * n_selected)))
    train_idx, val_idx = np.sort(selected[n_val:]), np.sort(selected[:n_val])
    def scale(images: np.ndarray) -> np.ndarray:
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            images = resize(images, image_size)
        return images.astype(np.float32) / 255.0

    return Splits(scale(dataset.x_train[train_idx]), scale(dataset.x_train[val_idx]), scale(dataset.x_test))


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3) with Pillow's antialiased bicubic filter."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC)) for img in images])
