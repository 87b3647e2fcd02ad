"""The in-memory data set every reader returns, and the names shared by the data modules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PBC_CLASS_NAMES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocytes",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
"""The 8 PBC classes in the order of the course data's integer labels 0..7 (and BloodMNIST's)."""

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
"""Split names, in the order of their codes 0, 1, 2 in ``Dataset.predefined_split``."""

FORMATS: tuple[str, ...] = ("npz", "medmnist", "folder", "bloodmnist")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Validated images and labels, as read from one ``--data`` argument.

    Attributes:
        images: (N, H, W, 3) uint8 RGB, already resized to the requested image size.
        labels: (N,) int64 class indices into ``class_names``.
        class_names: the class names, index i naming label i.
        source: the ``--data`` argument as given.
        format: "npz", "medmnist", "folder" or "bloodmnist".
        predefined_split: (N,) int8 with 0 train, 1 val, 2 test for MedMNIST files, else None.
        notes: human-readable notes on what reading changed (resizing, conversions, assumptions).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    format: str
    predefined_split: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])

    def class_counts(self, indices: np.ndarray | None = None) -> dict[str, int]:
        """Number of images per class name, over all images or over ``indices``."""
        labels = self.labels if indices is None else self.labels[indices]
        counts = np.bincount(labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}
