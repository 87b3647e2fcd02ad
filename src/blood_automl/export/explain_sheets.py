"""Grad-CAM sheets: which images to show, the heat map over the image, the PNG figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FILE = "gradcam.png"
"""The summary sheet refit-best puts into an export (test images and their heat maps)."""
SUMMARY_PER_CLASS = 2
SUMMARY_MAX = 32


def choose(labels: np.ndarray, probs: np.ndarray, per_class: int) -> dict[int, np.ndarray]:
    """Per true class: up to ``per_class`` right then ``per_class`` wrong image indices.

    Each kind is ordered by the probability of the predicted class, highest first (ties by
    index), so the same data always gives the same sheets.
    """
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    chosen: dict[int, np.ndarray] = {}
    for c in range(probs.shape[1]):
        picks = []
        for right in (True, False):
            idx = np.flatnonzero((labels == c) & ((predicted == c) == right))
            order = np.lexsort((idx, -confidence[idx]))
            picks.append(idx[order][:per_class])
        chosen[c] = np.concatenate(picks).astype(np.int64)
    return chosen


@dataclass(frozen=True, eq=False)
class Views:
    """What the figures show: images, labels, probabilities and the heat maps computed."""

    images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    names: Sequence[str]
    maps: dict[int, np.ndarray]
    method: str

    def captions(self, i: int) -> tuple[str, str, bool]:
        """Image ``i``'s two titles (``#i true X``, ``pred Y 0.93``) and whether it is right."""
        p = int(self.probs[i].argmax())
        right = p == int(self.labels[i])
        verdict = "" if right else " wrong"
        return (
            f"#{i} true {self.names[self.labels[i]]}",
            f"pred {self.names[p]} {self.probs[i, p]:.2f}{verdict}",
            right,
        )


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (uint8 RGB) with the heat map (0..1) blended over it in the ``jet`` colours."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    mixed = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return (np.clip(mixed, 0.0, 1.0) * 255).astype(np.uint8)


def pair_png(image: np.ndarray, heat: np.ndarray, path: Path) -> Path:
    """The image and the image with its heat map, side by side, as one PNG (3x upscaled)."""
    from PIL import Image

    both = np.concatenate([image.astype(np.uint8), overlay(image, heat)], axis=1)
    picture = Image.fromarray(both)
    picture = picture.resize((both.shape[1] * 3, both.shape[0] * 3), Image.Resampling.NEAREST)
    picture.save(path)
    return path


def sheet_png(
    view: Views, indices: Sequence[int], path: Path, title: str, *, pairs: int = 2
) -> Path:
    """A sheet: per image, the image and its heat map overlay, ``pairs`` images to a row.

    The image is titled with its index and true class, the overlay with the predicted
    class and its probability (green when right, red and "wrong" when not).
    """
    from blood_automl.analysis.figures import _pyplot

    plt = _pyplot()
    cols = 2 * pairs  # each image as image + overlay
    n = max(len(indices), 1)
    rows = (n + pairs - 1) // pairs
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(2.4 * cols, 2.6 * rows + 0.5),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.ravel():
        ax.axis("off")
    if not indices:
        axes[0, 0].text(0, 0.5, "no images of this class", fontsize=10)
    for k, i in enumerate(indices):
        row, col = divmod(k, pairs)
        ax_img, ax_cam = axes[row, 2 * col], axes[row, 2 * col + 1]
        image_title, heat_title, right = view.captions(i)
        colour = "darkgreen" if right else "firebrick"
        ax_img.imshow(view.images[i])
        ax_img.set_title(image_title, fontsize=8)
        ax_cam.imshow(overlay(view.images[i], view.maps[i]))
        ax_cam.set_title(heat_title, fontsize=8, color=colour)
    fig.suptitle(title, fontsize=9, wrap=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_sheet(
    model: Any, images: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path, title: str
) -> Path:
    """refit-best's ``gradcam.png``: two right and two wrong test images per class, at most 32."""
    from blood_automl.export.explain import describe, gradcam

    pixels = np.asarray(images)
    probs = np.asarray(model.predict(pixels.astype(np.float32), verbose=0), dtype=np.float32)
    chosen = choose(np.asarray(labels, dtype=np.int64), probs, SUMMARY_PER_CLASS)
    picks = [int(i) for c in sorted(chosen) for i in chosen[c]][:SUMMARY_MAX]
    cams = gradcam(model, pixels[picks], classes=probs[picks].argmax(axis=1))
    maps = {i: cams.maps[k] for k, i in enumerate(picks)}
    view = Views(pixels, np.asarray(labels), probs, names, maps, describe(cams))
    return sheet_png(view, picks, path, f"{title}: test images ({view.method})", pairs=4)
