"""Tasks: what a model sees and what it must predict, with the exact way back to RGB.

A `Task` turns RGB images (float32 in [0, 1], shape (N, H, W, 3)) into model inputs and
targets, and turns model outputs back into RGB, so every metric is computed on RGB images
whatever the task and encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweep.errors import SpecError

__all__ = ["Task", "luminance", "task_for"]

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # the seeds' rgb2gray weights


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of RGB in [0, 1], keeping a channel axis: (N, H, W, 1)."""
    return (rgb @ BT601)[..., None].astype(np.float32)


@dataclass(frozen=True)
class Task:
    name: str
    encoding: str
    input_channels: int
    output_channels: int

    def inputs(self, rgb: np.ndarray) -> np.ndarray:
        return rgb if self.name == "reconstruct" else luminance(rgb)

    def targets(self, rgb: np.ndarray) -> np.ndarray:
        return rgb

    def to_rgb(self, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        return np.clip(outputs, 0.0, 1.0)


def task_for(task: str, encoding: str = "rgb") -> Task:
    if task == "reconstruct":
        return Task("reconstruct", "rgb", 3, 3)
    if task == "colorize" and encoding == "rgb":
        return Task("colorize", "rgb", 1, 3)
    raise SpecError(f"task {task!r} with encoding {encoding!r} is not available")
