"""Cleaning: the bar on real PBC images with planted artefacts, and the rules on small synthetic data."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from blood_automl.data import clean_dataset
from blood_automl.data.clean import STAT_NAMES, image_statistics, outlier_flags
from conftest import make_images

from .conftest import Planted, cartoon, far_outliers


def test_cleaning_bar_on_real_images_with_planted_artefacts(planted: Planted) -> None:
    """All planted artefacts and duplicates go; at most 0.5% of genuine cells do."""
    report = clean_dataset(planted.images, planted.labels)
    n = len(planted.labels)
    removed = np.zeros(n, dtype=bool)
    removed[report.removed_indices()] = True
    assert removed.sum() == report.n_removed == n - report.n_kept

    assert removed[planted.artefact].all(), np.flatnonzero(planted.artefact & ~removed)
    for original, copy in planted.dup_same:
        assert removed[original] != removed[copy]  # exactly one copy stays
    for original, copy in planted.dup_conflict:
        assert removed[original] and removed[copy]
    genuine_removed = int(removed[planted.genuine].sum())
    assert genuine_removed <= 0.005 * planted.genuine.sum(), genuine_removed

    kinds = Counter(g.kind for g in report.groups)
    assert kinds["repeated"] == 2
    assert sorted(g.count for g in report.groups if g.kind == "repeated") == [50, 400]
    assert next(g for g in report.groups if g.kind == "duplicate").count == 20
    assert next(g for g in report.groups if g.kind == "conflict").count == 20
    repeated = next(g for g in report.groups if g.count == 400)
    assert "400 identical copies" in repeated.reason and "labelled in 8 classes" in repeated.reason
    all_indices = [i for g in report.groups for i in g.indices]
    assert len(all_indices) == len(set(all_indices))  # each removal in exactly one group
    assert np.array_equal(report.keep, np.flatnonzero(~removed))


def test_real_sample_loses_almost_no_genuine_cells(pbc_small: dict[str, np.ndarray]) -> None:
    images, labels = pbc_small["images"], pbc_small["labels"]
    report = clean_dataset(images, labels)
    # real byte-identical duplicates in the sample are correctly removed: count them apart
    copies = Counter(hashlib.sha256(images[i].data).digest() for i in range(len(images)))
    real_duplicate_extras = sum(c - 1 for c in copies.values() if c > 1)
    dedup = sum(g.count for g in report.groups if g.kind in ("duplicate", "conflict", "repeated"))
    assert dedup <= 2 * real_duplicate_extras
    outliers = sum(g.count for g in report.groups if g.kind.endswith("outlier"))
    assert outliers <= 0.005 * len(images), [g.reason for g in report.groups]


def test_planted_detection_is_not_an_accident_of_the_fixture(
    pbc_small: dict[str, np.ndarray],
) -> None:
    """Far outliers are found one at a time too, in any class."""
    images, labels = pbc_small["images"], pbc_small["labels"]
    singles = far_outliers(images[100])
    for k, single in enumerate(singles):
        x = np.concatenate([images, single[None]])
        y = np.concatenate([labels, [k % 8]])
        report = clean_dataset(x, y)
        assert len(images) in report.removed_indices(), k


def test_exact_duplicates_keep_first_and_conflicts_drop_all() -> None:
    images, labels = make_images(40, size=16)
    x = np.concatenate([images, images[[3, 5, 5]], images[[7]]])
    y = np.concatenate([labels, labels[[3, 5, 5]], [(labels[7] + 1) % 8]])
    report = clean_dataset(x, y, outliers=False)
    groups = {g.kind: g for g in report.groups}
    assert groups["duplicate"].indices == (40, 41, 42)
    assert groups["conflict"].indices == (7, 43)
    assert "conflicting labels (1 picture" in groups["conflict"].reason
    assert report.n_kept == 39
    assert 3 in report.keep and 5 in report.keep and 7 not in report.keep


def test_many_copies_are_an_artefact_even_with_one_label() -> None:
    images, labels = make_images(40, size=16)
    x = np.concatenate([images, np.repeat(images[:1], 4, 0), np.repeat(images[1:2], 3, 0)])
    y = np.concatenate([labels, np.repeat(labels[:1], 4), np.repeat(labels[1:2], 3)])
    report = clean_dataset(x, y, outliers=False)
    repeated = [g for g in report.groups if g.kind == "repeated"]
    assert len(repeated) == 1 and repeated[0].indices == (0, 40, 41, 42, 43)
    assert next(g for g in report.groups if g.kind == "duplicate").indices == (44, 45, 46)


def test_one_pixel_makes_a_different_image() -> None:
    images, labels = make_images(20, size=16)
    twin = images[0].copy()
    twin[0, 0, 0] ^= 1
    report = clean_dataset(
        np.concatenate([images, twin[None]]), np.concatenate([labels, labels[:1]]), outliers=False
    )
    assert report.n_removed == 0


def test_synthetic_far_outlier_and_determinism() -> None:
    images, labels = make_images(400, size=32)
    odd = cartoon(0, 32)
    x = np.concatenate([images[:200], odd[None], images[200:]])
    y = np.concatenate([labels[:200], [2], labels[200:]])
    a = clean_dataset(x, y)
    b = clean_dataset(x.copy(), y.copy())
    assert a.removed_indices().tolist() == [200]
    assert np.array_equal(a.keep, b.keep) and a.to_dicts() == b.to_dicts()
    d = a.to_dicts()[0]
    assert set(d) >= {"reason", "count", "indices"} and d["count"] == 1 and d["indices"] == [200]


def test_statistics_shape_and_names() -> None:
    images, _ = make_images(5, size=96)
    stats = image_statistics(images)
    assert stats.shape == (5, len(STAT_NAMES))
    assert np.isfinite(stats).all()
    assert np.allclose(image_statistics(images, np.array([3, 1])), stats[[3, 1]])


def test_isolation_forest_alone_finds_noise_and_spares_real_cells(
    pbc_small: dict[str, np.ndarray],
) -> None:
    images, labels = pbc_small["images"], pbc_small["labels"]
    noise = far_outliers(images[0])[2]
    x = np.concatenate([images, noise[None]])
    y = np.concatenate([labels, [4]])
    class_flag, forest_flag = outlier_flags(x, y)
    assert forest_flag[-1] and class_flag[-1]
    assert not forest_flag[:-1].any() and not class_flag[:-1].any()
