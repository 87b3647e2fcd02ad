"""Colour and intensity of a set of images, and a warning when new images differ from the training ones.

refit-best stores :func:`summarize` of the train + validation images in the export
(``data_summary.json``); ``predict`` and ``evaluate`` summarize their images the same way
and :func:`shift_warning` compares the two. The unit of a shift is the spread of the
training images' per-image channel means: a set of images whose average lies that far
from the training average is unlike the training data (another stain, scanner or camera).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_VERSION = 1
CHANNELS = ("red", "green", "blue")
PERCENTILES = (5, 50, 95)
_CHUNK = 128  # images at a time: a few MiB of float32 pixels

MEAN_SHIFT_SDS = 1.0
"""A set whose mean lies this many training standard deviations away (plus the chance
wobble of a small set, :data:`SMALL_SET_SDS` / sqrt(n)) is warned about. A random half of
the same data set lies about 0.03 away; darker images (by 40 %) about 10, swapped red and
blue channels about 5."""
SMALL_SET_SDS = 4.0
CONTRAST_RATIO = 2.0
"""A pixel standard deviation this many times larger or smaller than in training is warned about."""
CONTRAST_MIN_IMAGES = 20
"""Fewer images say too little about contrast (one cell's own contrast varies widely)."""


def summarize(images: np.ndarray) -> dict[str, Any]:
    """Per-channel statistics of (N, H, W, 3) uint8 images, as a small JSON-ready dict.

    ``pixel_mean`` / ``pixel_std``: over all pixels; ``image_mean_std`` and
    ``image_mean_percentiles``: the spread of the per-image channel means.
    """
    images = np.asarray(images)
    n = int(images.shape[0])
    means = np.empty((n, 3), dtype=np.float64)
    squares = np.empty((n, 3), dtype=np.float64)
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK]
        pixels = chunk.reshape(chunk.shape[0], -1, 3).astype(np.float32)
        means[start : start + _CHUNK] = pixels.mean(axis=1, dtype=np.float64)
        squares[start : start + _CHUNK] = np.square(pixels).mean(axis=1, dtype=np.float64)
    pixel_mean = means.mean(axis=0)
    pixel_std = np.sqrt(np.maximum(squares.mean(axis=0) - pixel_mean**2, 0.0))
    return {
        "version": SUMMARY_VERSION,
        "images": n,
        "channels": list(CHANNELS),
        "pixel_mean": _rounded(pixel_mean),
        "pixel_std": _rounded(pixel_std),
        "image_mean_std": _rounded(means.std(axis=0)),
        "image_mean_percentiles": {
            str(p): _rounded(np.percentile(means, p, axis=0)) for p in PERCENTILES
        },
    }


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in values]


def read_summary(path: Path) -> dict[str, Any] | None:
    """The summary stored at ``path``; None when the file is absent or not a summary we can use.

    Older exports have none: then there is simply nothing to compare with.
    """
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(found, dict) or found.get("version") != SUMMARY_VERSION:
        return None
    for key in ("pixel_mean", "pixel_std", "image_mean_std"):
        values = found.get(key)
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        ):
            return None
    return found


def shift_warning(training: dict[str, Any] | None, images: np.ndarray) -> str | None:
    """One line saying how ``images`` differ from the training images, or None when they do not."""
    if training is None or len(images) == 0:
        return None
    found = summarize(images)
    n = found["images"]
    limit = MEAN_SHIFT_SDS + SMALL_SET_SDS / math.sqrt(n)
    shifts = [
        (new - old) / max(sd, 1e-6)
        for new, old, sd in zip(
            found["pixel_mean"], training["pixel_mean"], training["image_mean_std"], strict=True
        )
    ]
    worst = int(np.argmax(np.abs(shifts)))
    fix = (
        "check the stain and scanner, and evaluate the model on labelled images of this kind "
        "(blood-automl evaluate) before trusting its predictions"
    )
    if abs(shifts[worst]) > limit:
        return (
            f"these {n} images are unlike the model's training images: their {CHANNELS[worst]} "
            f"channel averages {found['pixel_mean'][worst]:.1f} against "
            f"{training['pixel_mean'][worst]:.1f} in training, {abs(shifts[worst]):.1f} training "
            f"standard deviations {'above' if shifts[worst] > 0 else 'below'}; {fix}"
        )
    if n < CONTRAST_MIN_IMAGES:
        return None
    ratios = [
        new / max(old, 1e-6)
        for new, old in zip(found["pixel_std"], training["pixel_std"], strict=True)
    ]
    odd = int(np.argmax([max(r, 1 / max(r, 1e-6)) for r in ratios]))
    if max(ratios[odd], 1 / max(ratios[odd], 1e-6)) > CONTRAST_RATIO:
        return (
            f"these {n} images are unlike the model's training images: their {CHANNELS[odd]} "
            f"channel's contrast (pixel standard deviation {found['pixel_std'][odd]:.1f}) is "
            f"{ratios[odd]:.2f} times that of training ({training['pixel_std'][odd]:.1f}); {fix}"
        )
    return None
