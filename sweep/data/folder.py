"""Image folders: a directory of colour JPEG/PNG images as a dataset.

The images are searched recursively and resized to the protocol's `image_size` as they are
read. With `train/` and `test/` subfolders those are the split; otherwise a fixed shuffle of
the sorted file names holds out `FOLDER_TEST_FRACTION` as the test set. Images Pillow cannot
decode are all named in one `DataError`, never skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweep.data.dataset import Dataset
from sweep.data.splits import SPLIT_SEED
from sweep.errors import DataError

__all__ = ["FOLDER_TEST_FRACTION", "IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_TEST_FRACTION = 0.1  # seed 003 held out 500 of 6000 images (plus 500 for validation)


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
