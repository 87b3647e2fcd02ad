"""Stratified, seeded, reproducible splits; MedMNIST's own split kept; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from blood_automl.data import split_indices
from blood_automl.data.split import class_split_counts
from blood_automl.errors import ConfigError, DataError


def _labels() -> np.ndarray:
    counts = [300, 120, 57, 9, 3]
    return np.random.default_rng(5).permutation(np.repeat(np.arange(5), counts))


def test_split_is_a_stratified_partition() -> None:
    labels = _labels()
    split = split_indices(labels, seed=0)
    together = np.concatenate(split)
    assert np.array_equal(np.sort(together), np.arange(labels.size))  # disjoint, complete
    for part in split:
        assert np.all(np.diff(part) > 0)  # sorted
    for c, n in enumerate(np.bincount(labels)):
        got = [int((labels[part] == c).sum()) for part in split]
        assert got == list(class_split_counts(int(n), (0.64, 0.16, 0.20)))
        assert abs(got[0] - 0.64 * n) <= 2 and abs(got[2] - 0.20 * n) <= 1
    assert split.sizes()["train"] == split.train.size


def test_split_is_seeded_and_reproducible() -> None:
    labels = _labels()
    a, b, c = (
        split_indices(labels, seed=1),
        split_indices(labels, seed=1),
        split_indices(labels, seed=2),
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.test, c.test)


def test_a_class_split_does_not_depend_on_other_classes() -> None:
    labels = _labels()
    other = labels.copy()
    other[labels > 0] = np.random.default_rng(1).integers(1, 5, int((labels > 0).sum()))
    a, b = split_indices(labels, seed=0), split_indices(other, seed=0)
    zero = labels == 0
    for part_a, part_b in zip(a, b, strict=True):
        assert np.array_equal(part_a[zero[part_a]], part_b[zero[part_b]])


def test_predefined_split_is_kept() -> None:
    labels = _labels()
    predefined = np.random.default_rng(0).integers(0, 3, labels.size).astype(np.int8)
    split = split_indices(labels, predefined=predefined, seed=9)
    for code, part in enumerate(split):
        assert np.array_equal(part, np.flatnonzero(predefined == code))
    assert np.array_equal(split.assignment(labels.size), predefined)


def test_empty_predefined_split_is_refused() -> None:
    with pytest.raises(DataError, match="own val split is empty"):
        split_indices(np.zeros(10, int), predefined=np.array([0] * 8 + [2] * 2), source="m.npz")


def test_too_few_images_in_a_class() -> None:
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(DataError) as info:
        split_indices(labels, class_names=["basophil", "platelet"], source="d.npz")
    assert str(info.value).startswith("d.npz: class 'platelet' has 2 image(s)")
    split_indices(np.array([0] * 10 + [1] * 3), class_names=["basophil", "platelet"])


def test_class_without_images_is_refused() -> None:
    with pytest.raises(DataError, match="class 'c' has 0 image"):
        split_indices(np.array([0] * 10 + [1] * 10), class_names=["a", "b", "c"])


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (0.8, 0.0, 0.2), (1.2, -0.1, -0.1)]
)
def test_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="fractions"):
        split_indices(_labels(), fractions=fractions)


def test_other_fractions() -> None:
    labels = np.repeat(np.arange(2), 100)
    split = split_indices(labels, fractions=(0.8, 0.1, 0.1))
    assert split.sizes() == {"train": 160, "val": 20, "test": 20}
