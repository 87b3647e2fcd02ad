"""Test-time augmentation: class probabilities averaged over the 8 dihedral views of each image.

A blood cell has no up or down: its 4 rotations by 90 degrees and their mirror images are
the same cell. The views are made with numpy; the model's own ``predict_on_batch`` scores
them. Images are square (the model's input), so every view keeps their shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]

N_VIEWS = 8


def _view(k: int, flip: bool) -> Transform:
    """Mirror left-right (when ``flip``), then rotate by ``k`` quarter turns; (N, H, W, C) arrays."""

    def apply(images: np.ndarray) -> np.ndarray:
        flipped = images[:, :, ::-1] if flip else images
        return np.rot90(flipped, k, axes=(1, 2))

    return apply


def _inverse(k: int, flip: bool) -> Transform:
    """The view of :func:`_view` undone: rotate back, then mirror back."""

    def apply(images: np.ndarray) -> np.ndarray:
        turned = np.rot90(images, -k, axes=(1, 2))
        return turned[:, :, ::-1] if flip else turned

    return apply


VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
"""(quarter turns, mirrored) of the 8 views: identity and 3 rotations, then the same mirrored."""
TRANSFORMS: tuple[Transform, ...] = tuple(_view(k, f) for k, f in VIEWS)
INVERSES: tuple[Transform, ...] = tuple(_inverse(k, f) for k, f in VIEWS)


def predict_tta(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) float32: the mean of the model's output over the 8 views.

    ``images`` are (N, S, S, 3) raw pixels (uint8, as the exported model takes them); they
    are scored ``batch_size`` at a time, each batch in its 8 views.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"test-time augmentation needs square (N, S, S, C) images, not {images.shape}"
        )
    parts = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        total: np.ndarray | None = None
        for transform in TRANSFORMS:
            view = np.ascontiguousarray(transform(batch), dtype=np.float32)
            probs = np.asarray(model.predict_on_batch(view), dtype=np.float64)
            total = probs if total is None else total + probs
        assert total is not None
        parts.append((total / N_VIEWS).astype(np.float32))
    if not parts:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.concatenate(parts)
