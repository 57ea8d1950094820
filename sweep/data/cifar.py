"""CIFAR-10/100 from their official python folders, read without ever running code.

The official CIFAR files are pickles. They are read with `SafeUnpickler`, which admits only
the numpy functions that rebuild an array, so a data file can never run code. The loaded
arrays are checked (types, shapes, sizes) and every problem is reported as one `DataError`
line that names the file. Without a folder, the files are downloaded once through Keras'
own cache (`~/.keras/datasets`).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from sweep.data.dataset import Dataset
from sweep.errors import DataError, must_be
from sweep.files import held_native_stderr

__all__ = ["CIFAR", "SafeUnpickler", "UnsafePickleError", "keras_cache_folder", "load_cifar", "read_cifar_file"]

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
        raise DataError(f"{path}: " + must_be("'data'", None, "a uint8 array of shape (N, 3072) (32x32x3 images)", got))
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


def keras_cache_folder(name: str) -> Path:
    """Where Keras' own download of `name` lands (the folder keras.datasets uses, so its
    downloads are shared): it holds the python-format folder."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / f"{CIFAR[name][0]}-target"


def _download(name: str) -> Path:
    folder, _, _, _, url, sha256 = CIFAR[name]
    target = keras_cache_folder(name).name
    cache = keras_cache_folder(name) / folder
    if not (cache / CIFAR[name][1][0]).exists():
        try:
            with held_native_stderr():  # the framework's start-up chatter, shown only if importing fails
                from keras.utils import get_file
            get_file(fname=target, origin=url, extract=True, file_hash=sha256)
        except Exception as err:  # no network, a proxy, a full disk: one line, and both ways out
            raise DataError(
                f"could not download {name} through Keras ({type(err).__name__}: {err}); "
                f"pass --data-dir DIR where DIR holds {folder}/ (the official python-format folder), "
                "or try sweep offline on generated images: --dataset synthetic --quick"
            ) from None
    if not (cache / CIFAR[name][1][0]).exists():
        raise DataError(f"the Keras download of {name} left no {folder}/ under {cache.parent}; pass --data-dir")
    return cache


def load_cifar(name: str, data_dir: str | None) -> Dataset:
    """CIFAR-10 or -100 from `data_dir` (the folder holding the python-format folder, or that
    folder itself), or from Keras' cache after a download when `data_dir` is None."""
    folder = _cifar_folder(name, data_dir)
    _, train_files, test_files, label_key, _, _ = CIFAR[name]
    x_train = np.concatenate([read_cifar_file(folder / f, label_key) for f in train_files])
    x_test = np.concatenate([read_cifar_file(folder / f, label_key) for f in test_files])
    return Dataset(name, x_train, x_test, str(folder))
