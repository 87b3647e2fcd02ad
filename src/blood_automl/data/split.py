"""Stratified, seeded train / validation / test split, or the data set's own (MedMNIST) split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from blood_automl.data.dataset import SPLIT_NAMES
from blood_automl.errors import ConfigError, DataError

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.64, 0.16, 0.20)


class Split(NamedTuple):
    """Sorted int64 indices of the train, validation and test images."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Number of images per split."""
        return {name: int(part.shape[0]) for name, part in zip(SPLIT_NAMES, self, strict=True)}

    def assignment(self, n: int) -> np.ndarray:
        """(n,) int8: 0 train, 1 val, 2 test, -1 for indices in no split."""
        out = np.full(n, -1, dtype=np.int8)
        for code, part in enumerate(self):
            out[part] = code
        return out


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Return ``fractions`` as a (train, val, test) triple if they are positive and sum to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(math.isfinite(f) and f > 0 for f in values):
        raise ConfigError(
            f"split fractions must be three positive numbers (train, val, test), but got {tuple(fractions)}; "
            "use e.g. 0.64 0.16 0.20"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, but {values} sum to {sum(values):g}; use e.g. 0.64 0.16 0.20"
        )
    return values[0], values[1], values[2]


MAX_SEED = 2**32 - 1
"""The largest seed: numpy's legacy seeding and TensorFlow take seeds in [0, 2**32 - 1]."""


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int if it is an integer in [0, 2**32 - 1], else raise ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer, but got {seed!r}; use e.g. --seed 0")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(
            f"seed must be in [0, {MAX_SEED}] (2**32 - 1), but got {seed}; use a seed in range, "
            "e.g. --seed 0"
        )
    return int(seed)


def class_split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of ``n`` images of one class go to train, val and test (val, test at least 1)."""
    n_val = max(1, math.floor(n * fractions[1] + 0.5))
    n_test = max(1, math.floor(n * fractions[2] + 0.5))
    return n - n_val - n_test, n_val, n_test


def _min_class_size(fractions: tuple[float, float, float]) -> int:
    n = 1
    while min(class_split_counts(n, fractions)) < 1:
        n += 1
    return n


def _pct(fractions: tuple[float, float, float]) -> str:
    return "/".join(f"{100 * f:g}" for f in fractions)


def split_indices(
    labels: np.ndarray,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    predefined: np.ndarray | None = None,
    source: str = "data",
) -> Split:
    """Split positions ``0..N-1`` of ``labels`` into train, validation and test.

    Without ``predefined``: stratified by class, each class shuffled with its own generator
    seeded by ``(seed, class)``, so a class's split does not depend on the other classes.
    Each class puts ``round(n * fraction)`` images (at least one) into val and test and the
    rest into train; a class too small for that raises :class:`DataError`.
    With ``predefined`` ((N,) 0 train / 1 val / 2 test, e.g. MedMNIST's): that split is kept.
    """
    seed = check_seed(seed)
    labels = np.asarray(labels)
    n_classes = len(class_names) if class_names is not None else int(labels.max(initial=-1)) + 1
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if predefined is not None:
        predefined = np.asarray(predefined)
        parts = [np.flatnonzero(predefined == code).astype(np.int64) for code in range(3)]
        for name, part in zip(SPLIT_NAMES, parts, strict=True):
            if part.size == 0:
                raise DataError(
                    f"{source}: the data set's own {name} split is empty after cleaning; "
                    "give a file with images in every split, or use --no-clean"
                )
        return Split(*parts)

    fracs = check_fractions(fractions)
    need = _min_class_size(fracs)
    parts_by_split: list[list[np.ndarray]] = [[], [], []]
    counts = np.bincount(labels, minlength=n_classes) if labels.size else np.zeros(n_classes, int)
    for c in range(n_classes):
        if counts[c] < need:
            raise DataError(
                f"{source}: class '{names[c]}' has {counts[c]} image(s), too few for a "
                f"stratified {_pct(fracs)} train/val/test split (needs at least {need}); "
                "add images of this class or remove the class from the data"
            )
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([seed, c])
        idx = idx[rng.permutation(idx.size)]
        n_train, n_val, _ = class_split_counts(idx.size, fracs)
        parts_by_split[0].append(idx[:n_train])
        parts_by_split[1].append(idx[n_train : n_train + n_val])
        parts_by_split[2].append(idx[n_train + n_val :])
    return Split(*(np.sort(np.concatenate(p)).astype(np.int64) for p in parts_by_split))
