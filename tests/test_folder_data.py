"""Image-folder datasets: resized, split deterministically, every bad file named; and the
augmentation the trial runner applies to training images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sweep.data import augment, dataset_for, load_folder, make_splits
from sweep.errors import DataError, SpecError
from sweep.spec import TrainingProtocol


def write_images(folder: Path, n: int, start: int = 0, size: tuple[int, int] = (40, 30)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        path = folder / (f"img{i:03d}.png" if i % 2 else f"img{i:03d}.JPG")
        pixels = rng.integers(0, 256, size=(*size[::-1], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
        paths.append(path)
    return paths


def test_a_folder_is_resized_and_split_deterministically(tmp_path):
    write_images(tmp_path / "a", 12)
    write_images(tmp_path / "b" / "nested", 8, start=12, size=(16, 16))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_folder(str(tmp_path), 24)
    assert data.x_train.shape == (18, 24, 24, 3) and data.x_test.shape == (2, 24, 24, 3)
    assert data.x_train.dtype == np.uint8 and data.name == "folder"
    again = load_folder(str(tmp_path), 24)
    assert again.data_id == data.data_id and np.array_equal(again.x_test, data.x_test)
    assert load_folder(str(tmp_path), 16).data_id != data.data_id
    splits = make_splits(data, train_fraction=1.0, val_fraction=0.2, image_size=24)
    assert len(splits.train) + len(splits.val) == 18 and splits.test.shape == (2, 24, 24, 3)


def test_train_and_test_subfolders_are_the_split(tmp_path):
    write_images(tmp_path / "train", 5)
    write_images(tmp_path / "test", 3, start=5)
    data = load_folder(str(tmp_path), 8)
    assert len(data.x_train) == 5 and len(data.x_test) == 3


def test_every_unreadable_image_is_named_in_one_line(tmp_path):
    paths = write_images(tmp_path, 6)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    truncated = paths[1].read_bytes()
    (tmp_path / "cut.png").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(DataError) as info:
        load_folder(str(tmp_path), 8)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: 2 unreadable image(s): ") and "\n" not in message
    assert "broken.jpg (" in message and "cut.png (" in message


@pytest.mark.parametrize(
    "setup, data_dir, size, message",
    [
        (lambda p: None, None, 8, "needs --data-dir DIR"),
        (lambda p: None, "missing", 8, "no such directory"),
        (lambda p: write_images(p, 2), ".", 8, "found 2 JPEG/PNG image(s); a folder dataset needs at least 3"),
        (lambda p: write_images(p, 4), ".", None, "needs image_size"),
    ],
)
def test_unusable_folders(tmp_path, setup, data_dir, size, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=re.escape(message)):
        load_folder(None if data_dir is None else str(tmp_path / data_dir), size)


def test_the_protocol_asks_for_a_size_and_dataset_for_passes_it(tmp_path):
    with pytest.raises(SpecError, match="dataset 'folder' needs image_size"):
        TrainingProtocol(dataset="folder")
    write_images(tmp_path, 5)
    data = dataset_for(TrainingProtocol(dataset="folder", image_size=16), str(tmp_path))
    assert data.image_shape == (16, 16, 3)


def test_augment_flips_and_rotates_each_image_on_its_own():
    rng = np.random.default_rng(0)
    images = np.random.default_rng(1).random((64, 8, 8, 3)).astype(np.float32)
    flipped = augment(images, np.random.default_rng(0), flip=True, rotation=0.0)
    was_flipped = np.array([np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, images)])
    unchanged = np.array([np.array_equal(f, i) for f, i in zip(flipped, images)])
    assert np.all(was_flipped | unchanged) and 10 < was_flipped.sum() < 54
    rotated = augment(images, rng, flip=False, rotation=15.0)
    assert rotated.shape == images.shape and 0.0 <= rotated.min() and rotated.max() <= 1.0
    assert not np.allclose(rotated, images)
    assert np.array_equal(augment(images, rng, flip=False, rotation=0.0), images)
