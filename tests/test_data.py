"""Data: the official CIFAR format read safely, checked, split deterministically."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from sweep.data import load_dataset, make_splits, read_cifar_file
from sweep.errors import DataError


def write_batch(path: Path, data, labels=None, protocol=2) -> Path:
    labels = list(range(len(data))) if labels is None else labels
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, handle, protocol=protocol)
    return path


def fake_cifar(root: Path, n: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(folder / name, rng.integers(0, 256, size=(n, 3072), dtype=np.uint8))
    return root


class Payload:
    """Unpickling this runs `touch <path>`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    with open(evil, "wb") as handle:
        pickle.dump({b"data": Payload(marker), b"labels": []}, handle, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR data file \(refusing to load posix.system"):
        read_cifar_file(evil, "labels")
    assert not marker.exists()


def test_official_layout_round_trips_channels_last(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    images = read_cifar_file(write_batch(tmp_path / "b", data), "labels")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    # channel-major rows: the first 1024 bytes are red, row by row
    assert images[0, 0, 1, 0] == data[0, 1] and images[0, 0, 0, 1] == data[0, 1024]


def test_python3_numpy_pickles_load_too(tmp_path):
    data = np.zeros((3, 3072), dtype=np.uint8)
    images = read_cifar_file(write_batch(tmp_path / "b", data, protocol=4), "labels")
    assert images.shape == (3, 32, 32, 3)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}, protocol=2)[:-40]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a CIFAR data file|truncated or corrupt"),
        (lambda p: write_batch(p, np.zeros((4, 100), np.uint8)), r"'data' must be a uint8 array of shape \(N, 3072\).*Got 'uint8 array of shape \(4, 100\)' instead"),
        (lambda p: write_batch(p, np.zeros((4, 3072), np.float32)), "Got 'float32 array"),
        (lambda p: write_batch(p, np.zeros((4, 3072), np.uint8), labels=[1]), "expected 4 'labels' entries"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)), "expected a dict"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "data_batch_1"
    make(path)
    with pytest.raises(DataError, match=expected) as info:
        read_cifar_file(path, "labels")
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_data_dir_may_be_the_parent_or_the_folder_itself(tmp_path):
    root = fake_cifar(tmp_path / "data")
    a = load_dataset.__wrapped__("cifar10", str(root))
    b = load_dataset.__wrapped__("cifar10", str(root / "cifar-10-batches-py"))
    assert a.x_train.shape == (100, 32, 32, 3) and a.x_test.shape == (20, 32, 32, 3)
    assert a.data_id == b.data_id


def test_missing_data_dir_says_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="no such directory; it should hold cifar-10-batches-py/"):
        load_dataset.__wrapped__("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="pass the folder that holds cifar-10-batches-py/, or leave --data-dir out"):
        load_dataset.__wrapped__("cifar10", str(tmp_path))


def test_a_missing_batch_file_is_named(tmp_path):
    root = fake_cifar(tmp_path / "data")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: file not found"):
        load_dataset.__wrapped__("cifar10", str(root))


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    import keras.utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError, match=r"could not download cifar10 through Keras \(OSError: network is unreachable\); pass --data-dir DIR"):
        load_dataset.__wrapped__("cifar10", None)


def test_keras_cache_is_used_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    fake_cifar(tmp_path / "keras" / "datasets" / "cifar-10-batches-py-target")
    dataset = load_dataset.__wrapped__("cifar10", None)
    assert len(dataset.x_train) == 100


def test_splits_are_deterministic_disjoint_and_scaled(synthetic):
    a = make_splits(synthetic, train_fraction=0.5, val_fraction=0.2)
    b = make_splits(synthetic, train_fraction=0.5, val_fraction=0.2)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert len(a.train) + len(a.val) == 256 and len(a.val) == 51
    assert a.train.dtype == np.float32 and 0.0 <= a.train.min() and a.train.max() <= 1.0
    flat_train = {img.tobytes() for img in a.train}
    assert not any(img.tobytes() in flat_train for img in a.val)
    limited = make_splits(synthetic, train_fraction=1.0, val_fraction=0.1, train_limit=40)
    assert len(limited.train) + len(limited.val) == 40
    assert len(limited.test) == len(synthetic.x_test)


def test_synthetic_is_deterministic():
    a, b = load_dataset.__wrapped__("synthetic"), load_dataset.__wrapped__("synthetic")
    assert a.data_id == b.data_id and a.x_train.shape == (512, 32, 32, 3)


def test_resize_to_image_size(synthetic):
    splits = make_splits(synthetic, train_fraction=0.05, val_fraction=0.2, image_size=16)
    assert splits.train.shape[1:] == (16, 16, 3) and splits.test.shape[1:] == (16, 16, 3)


@pytest.mark.shared_data
def test_shared_cifar10_subset(shared_data, tmp_path):
    dataset = load_dataset("cifar10", str(shared_data))
    assert dataset.x_train.shape == (5085, 32, 32, 3) and dataset.x_test.shape == (1017, 32, 32, 3)
    copy = tmp_path / "elsewhere"
    shutil.copytree(shared_data / "cifar-10-batches-py", copy / "cifar-10-batches-py")
    assert load_dataset.__wrapped__("cifar10", str(copy)).data_id == dataset.data_id
