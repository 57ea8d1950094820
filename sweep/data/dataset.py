"""A loaded dataset: uint8 images, where they came from, and a content hash that names them."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset"]


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
