"""Datasets: CIFAR-10/100 from their official python folders, image folders, a synthetic
set, and splits.

The official CIFAR files are pickles. They are read with `SafeUnpickler`, which admits only
the three numpy functions that rebuild an array, so a data file can never run code. The
loaded arrays are checked (types, shapes, sizes) and every problem is reported as one
`DataError` line that names the file.

An image folder (`dataset: folder`, `--data-dir DIR`) is a directory of colour JPEG/PNG
images, searched recursively and resized to the protocol's `image_size` as they are read.
With `train/` and `test/` subfolders those are the split; otherwise a fixed shuffle of the
sorted file names holds out `FOLDER_TEST_FRACTION` as the test set. Images Pillow cannot
decode are all named in one `DataError`, never skipped.

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

__all__ = [
    "Dataset",
    "Splits",
    "SafeUnpickler",
    "augment",
    "dataset_for",
    "load_dataset",
    "load_folder",
    "make_splits",
    "repeated",
    "read_cifar_file",
]

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
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_TEST_FRACTION = 0.1  # seed 003 held out 500 of 6000 images (plus 500 for validation)


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


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_images(root: Path, files: list[Path], size: int) -> tuple[np.ndarray, list[str]]:
    """Decode, convert to RGB and resize every file; (images, problems naming the bad files)."""
    from PIL import Image, ImageOps

    images, problems = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not later
                img = ImageOps.exif_transpose(img).convert("RGB")
                images.append(np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.uint8))
        except Exception as err:  # any failure to decode is that file's problem; all are reported together
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            problems.append(f"{path.relative_to(root)} ({reason})")
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return stacked, problems


def load_folder(data_dir: str | None, image_size: int | None) -> Dataset:
    """A directory of colour images, resized to `image_size` squares and split deterministically."""
    if data_dir is None:
        raise DataError("dataset 'folder' needs --data-dir DIR, a directory of JPEG/PNG images")
    if image_size is None:
        raise DataError("dataset 'folder' needs image_size, the square size its images are resized to")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such directory; it should hold JPEG/PNG images")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files, test_files = _image_files(root / "train"), _image_files(root / "test")
    else:
        files = _image_files(root)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
        n_test = max(1, int(round(FOLDER_TEST_FRACTION * len(files))))
        test_files = sorted(files[i] for i in order[:n_test])
        train_files = sorted(files[i] for i in order[n_test:])
    if len(train_files) < 2 or not test_files:
        raise DataError(
            f"--data-dir {data_dir}: found {len(train_files) + len(test_files)} JPEG/PNG image(s); "
            f"a folder dataset needs at least 3 (2 to train and validate, 1 to test)"
        )
    x_train, bad_train = _read_images(root, train_files, image_size)
    x_test, bad_test = _read_images(root, test_files, image_size)
    problems = bad_train + bad_test
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(f"{root}: {len(problems)} unreadable image(s): {shown}")
    return Dataset("folder", x_train, x_test, str(root))


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None) -> Dataset:
    """Load a dataset once per process. `data_dir=None` downloads CIFAR through Keras;
    `image_size` is used by folder datasets only (CIFAR is resized in `make_splits`)."""
    failpoint("data.load")
    if name == "synthetic":
        return _synthetic()
    if name == "folder":
        return load_folder(data_dir, image_size)
    if name not in CIFAR:
        raise DataError(f"unknown dataset {name!r} (allowed: cifar10, cifar100, folder, synthetic)")
    folder = _cifar_folder(name, data_dir)
    _, train_files, test_files, label_key, _, _ = CIFAR[name]
    x_train = np.concatenate([read_cifar_file(folder / f, label_key) for f in train_files])
    x_test = np.concatenate([read_cifar_file(folder / f, label_key) for f in test_files])
    return Dataset(name, x_train, x_test, str(folder))


TRAIN_IMAGES_ENV = "SWEEP_TRAIN_IMAGES"  # benchmarks: repeat the training images up to this many


def dataset_for(protocol, data_dir: str | None = None) -> Dataset:
    """The dataset a protocol trains on, loaded once per process. With $SWEEP_TRAIN_IMAGES
    set (by `python -m sweep.bench --train-images`), its training images are repeated
    cyclically up to that count, so a small local subset can stand in for a full-size run."""
    size = protocol.image_size if protocol.dataset == "folder" else None
    dataset = load_dataset(protocol.dataset, data_dir, size)
    wanted = os.environ.get(TRAIN_IMAGES_ENV)
    return repeated(dataset, int(wanted)) if wanted else dataset


@functools.lru_cache(maxsize=4)
def repeated(dataset: Dataset, n_train: int) -> Dataset:
    """`dataset` with its training images repeated cyclically (or cut) to `n_train`; its
    `data_id` says so, since the content differs."""
    index = np.arange(n_train) % len(dataset.x_train)
    return Dataset(f"{dataset.name}-repeated", dataset.x_train[index], dataset.x_test, dataset.source)


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


def augment(images: np.ndarray, rng: np.random.Generator, flip: bool, rotation: float) -> np.ndarray:
    """Random horizontal flips (p = 0.5) and rotations uniform in [-rotation, rotation]
    degrees of float images (N, H, W, C), each image its own draw. Rotation is bilinear and
    fills the corners by reflection (Keras' RandomRotation default) rather than with black.
    Augment the RGB images before deriving inputs and targets, so both move together."""
    from scipy.ndimage import rotate

    out = np.array(images, copy=True)
    if flip:
        flipped = rng.random(len(out)) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    if rotation:
        angles = rng.uniform(-rotation, rotation, size=len(out))
        for i, angle in enumerate(angles):
            out[i] = rotate(out[i], angle, axes=(1, 0), reshape=False, order=1, mode="reflect")
    return np.clip(out, 0.0, 1.0)
