"""Cleaning: exact duplicates, repeated artefact images and far outliers, every removal reported.

Three stages, each removing images only from what the earlier ones kept:

1. **Repeated images.** Images are grouped by the sha256 of their pixels. A picture that
   occurs ``repeat_min_copies`` (5) times or more is an artefact (the course data held two
   cartoons repeated 1,600 and 200 times): every copy goes, one removal group per picture.
2. **Exact duplicates** (2 to 4 identical copies). When all copies carry the same label the
   first is kept and the others go; when the labels disagree every copy goes (a conflict).
3. **Outliers**, on 13 cheap statistics of each image (per-channel mean and std, grey
   2/50/98 percentiles, saturation, horizontal and vertical gradient energy, centre minus
   border brightness), measured on a ~24x24 grid:

   - *per-class statistical outlier*: at least ``class_min_stats`` (4) statistics lie more
     than ``class_z`` (8) robust standard deviations (IQR / 1.349) from the median of the
     image's class. Real cells that differ in stain or lighting stray on one to three
     colour statistics; a picture that is not a blood-cell image strays on many at once.
   - *isolation-forest outlier*: scikit-learn's IsolationForest (100 trees, fixed seed) on
     the statistics, robustly standardised over the whole set, scores the image more than
     ``forest_z`` (6) robust standard deviations above the median score.

   Measured on the 2,400 real PBC images of ``../shared/data/pbc_96_small.npz`` (also
   resized 96->28->96 like BloodMNIST, at 64x64, and tiled by rotations/flips to 17,000):
   no genuine cell is removed: a genuine cell's 4th-largest per-class |z| is at most 5.7
   and its forest score at most 4.9 robust SDs. Planted black, white, noise, gradient,
   striped, flat-colour, text and colour-inverted pictures reach 11.6 to 40 (4th-largest
   |z|) and 4.4 to 7.3 (forest). Classes with fewer than 20 kept images are compared with the
   statistics of all images instead; the forest needs 50 images.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

REPEAT_MIN_COPIES = 5
CLASS_Z = 8.0
CLASS_MIN_STATS = 4
FOREST_Z = 6.0
MIN_CLASS_IMAGES = 20
MIN_FOREST_IMAGES = 50

STAT_NAMES: tuple[str, ...] = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "grey_p02",
    "grey_p50",
    "grey_p98",
    "saturation",
    "gradient_x",
    "gradient_y",
    "centre_minus_border",
)

KINDS = ("repeated", "duplicate", "conflict", "class_outlier", "forest_outlier")
"""Removal kinds, in the order the stages run."""


@dataclass(frozen=True)
class RemovalGroup:
    """Images removed for one reason: ``indices`` index the input of :func:`clean_dataset`."""

    kind: str
    reason: str
    indices: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, object]:
        """``{"reason", "count", "indices", "kind"}``, JSON-able."""
        return {
            "reason": self.reason,
            "count": self.count,
            "indices": list(self.indices),
            "kind": self.kind,
        }


@dataclass(frozen=True, eq=False)
class CleaningReport:
    """What :func:`clean_dataset` kept and removed.

    Attributes:
        n_input: number of input images.
        keep: sorted int64 indices of the kept images (into the input).
        groups: the removal groups, each index in at most one group.
        thresholds: the thresholds used, for the manifest.
    """

    n_input: int
    keep: np.ndarray
    groups: tuple[RemovalGroup, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_removed(self) -> int:
        return self.n_input - self.n_kept

    def removed_indices(self) -> np.ndarray:
        """Sorted indices of all removed images."""
        if not self.groups:
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate([np.asarray(g.indices, dtype=np.int64) for g in self.groups]))

    def to_dicts(self) -> list[dict[str, object]]:
        """The removal groups as a JSON-able list of ``{"reason", "count", "indices", "kind"}``."""
        return [g.to_dict() for g in self.groups]


def keep_all(n: int) -> CleaningReport:
    """A report that keeps every one of ``n`` images (cleaning turned off)."""
    return CleaningReport(n_input=n, keep=np.arange(n, dtype=np.int64))


def image_hashes(images: np.ndarray) -> list[bytes]:
    """sha256 of each image's pixel bytes (identical pixels, identical hash)."""
    images = np.ascontiguousarray(images)
    return [hashlib.sha256(images[i].data).digest() for i in range(images.shape[0])]


def image_statistics(
    images: np.ndarray, index: np.ndarray | None = None, *, batch: int = 2048
) -> np.ndarray:
    """The 13 statistics of :data:`STAT_NAMES` per image (of ``images[index]``), on a ~24x24 grid.

    Returns (N, 13) float64. ``index`` avoids copying a subset of a large array first.
    """
    h, w = images.shape[1:3]
    n = images.shape[0] if index is None else index.shape[0]
    step = max(1, min(h, w) // 24)
    out = np.empty((n, len(STAT_NAMES)), dtype=np.float64)
    for start in range(0, n, batch):
        # channel-planar float32 copy of the grid: (b, 3, h', w'), fast reductions on the last axes
        rows = slice(start, start + batch) if index is None else index[start : start + batch]
        x = np.moveaxis(images[rows, ::step, ::step], 3, 1).astype(np.float32)
        b, _, gh, gw = x.shape
        flat = x.reshape(b, 3, gh * gw)
        mean = flat.mean(axis=2)
        mean_sq = np.einsum("bcp,bcp->bc", flat, flat, dtype=np.float64) / (gh * gw)
        std = np.sqrt(np.maximum(mean_sq - mean.astype(np.float64) ** 2, 0.0))
        r, g, bl = x[:, 0], x[:, 1], x[:, 2]
        grey = (r + g + bl) / 3.0
        m = gh * gw
        ks = [round(0.02 * (m - 1)), round(0.5 * (m - 1)), round(0.98 * (m - 1))]
        part = np.partition(grey.reshape(b, m), ks, axis=1)[:, ks]
        hi = np.maximum(np.maximum(r, g), bl)
        lo = np.minimum(np.minimum(r, g), bl)
        sat = ((hi - lo) / (hi + 1.0)).mean(axis=(1, 2)) * 255.0
        gx = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2)) if gw > 1 else np.zeros(b)
        gy = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2)) if gh > 1 else np.zeros(b)
        ch, cw = gh // 4, gw // 4
        centre_sum = grey[:, ch : gh - ch, cw : gw - cw].sum(axis=(1, 2))
        centre_n = (gh - 2 * ch) * (gw - 2 * cw)
        border_n = m - centre_n
        centre = centre_sum / centre_n
        border = (grey.sum(axis=(1, 2)) - centre_sum) / border_n if border_n else centre
        out[start : start + b] = np.column_stack([mean, std, part, sat, gx, gy, centre - border])
    return out


def robust_z(values: np.ndarray, reference: np.ndarray, *, floor: float = 1.0) -> np.ndarray:
    """(values - median) / (IQR / 1.349) of ``reference``, per column; the scale is at least ``floor``."""
    med = np.median(reference, axis=0)
    q1, q3 = np.percentile(reference, [25, 75], axis=0)
    scale = np.maximum((q3 - q1) / 1.349, floor)
    return (values - med) / scale


def _duplicate_groups(
    hashes: list[bytes], labels: np.ndarray, repeat_min_copies: int
) -> tuple[list[RemovalGroup], set[int]]:
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    groups: list[RemovalGroup] = []
    extra: list[int] = []
    conflict: list[int] = []
    n_conflict_sets = 0
    repeated = sorted(
        (v for v in by_hash.values() if len(v) >= repeat_min_copies), key=lambda v: v[0]
    )
    for idx in repeated:
        n_classes = len(set(labels[idx].tolist()))
        groups.append(
            RemovalGroup(
                "repeated",
                f"repeated image: {len(idx)} identical copies (first at index {idx[0]}), "
                f"labelled in {n_classes} class{'es' if n_classes != 1 else ''}",
                tuple(idx),
            )
        )
    for idx in by_hash.values():
        if 1 < len(idx) < repeat_min_copies:
            if len(set(labels[idx].tolist())) == 1:
                extra.extend(idx[1:])
            else:
                conflict.extend(idx)
                n_conflict_sets += 1
    if extra:
        groups.append(
            RemovalGroup(
                "duplicate",
                "exact duplicate of an earlier image with the same label",
                tuple(sorted(extra)),
            )
        )
    if conflict:
        groups.append(
            RemovalGroup(
                "conflict",
                f"exact duplicates with conflicting labels ({n_conflict_sets} picture"
                f"{'s' if n_conflict_sets != 1 else ''}, all copies dropped)",
                tuple(sorted(conflict)),
            )
        )
    removed = {i for g in groups for i in g.indices}
    return groups, removed


def outlier_flags(
    images: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray | None = None,
    *,
    class_z: float = CLASS_Z,
    class_min_stats: int = CLASS_MIN_STATS,
    forest_z: float = FOREST_Z,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (class-outlier, forest-outlier) flags for each image of ``images[index]``.

    ``labels`` are the labels of those images. See the module docstring for the rules.
    """
    stats = image_statistics(images, index)
    n = stats.shape[0]
    z = np.empty_like(stats)
    for c in np.unique(labels):
        m = labels == c
        reference = stats[m] if m.sum() >= MIN_CLASS_IMAGES else stats
        z[m] = robust_z(stats[m], reference)
    class_flag = (np.abs(z) > class_z).sum(axis=1) >= class_min_stats

    forest_flag = np.zeros(n, dtype=bool)
    if n >= MIN_FOREST_IMAGES:
        from sklearn.ensemble import IsolationForest  # lazy: sklearn takes a while to import

        standardized = robust_z(stats, stats)
        forest = IsolationForest(n_estimators=100, max_samples=min(256, n), random_state=seed)
        forest.fit(standardized)
        score = -forest.score_samples(standardized)
        forest_flag = robust_z(score[:, None], score[:, None], floor=1e-6)[:, 0] > forest_z
    return class_flag, forest_flag


def clean_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    repeat_min_copies: int = REPEAT_MIN_COPIES,
    outliers: bool = True,
    class_z: float = CLASS_Z,
    class_min_stats: int = CLASS_MIN_STATS,
    forest_z: float = FOREST_Z,
) -> CleaningReport:
    """Find repeated artefacts, exact duplicates and far outliers; return what to keep and why.

    ``images`` is (N, H, W, 3) uint8, ``labels`` (N,) int. Nothing is modified; the report's
    ``keep`` indexes the input. Deterministic: the same input always gives the same report.
    """
    n = int(images.shape[0])
    labels = np.asarray(labels)
    groups, removed = _duplicate_groups(image_hashes(images), labels, repeat_min_copies)
    mask = np.ones(n, dtype=bool)
    mask[list(removed)] = False
    remaining = np.flatnonzero(mask)
    if outliers and remaining.size:
        class_flag, forest_flag = outlier_flags(
            images,
            labels[remaining],
            None if remaining.size == n else remaining,
            class_z=class_z,
            class_min_stats=class_min_stats,
            forest_z=forest_z,
        )
        if class_flag.any():
            groups.append(
                RemovalGroup(
                    "class_outlier",
                    f"per-class statistical outlier: {class_min_stats} or more image statistics "
                    f"beyond {class_z:g} robust SDs of its class",
                    tuple(int(i) for i in remaining[class_flag]),
                )
            )
        only_forest = forest_flag & ~class_flag
        if only_forest.any():
            groups.append(
                RemovalGroup(
                    "forest_outlier",
                    f"isolation-forest outlier: anomaly score beyond {forest_z:g} robust SDs",
                    tuple(int(i) for i in remaining[only_forest]),
                )
            )
        mask[remaining[class_flag | forest_flag]] = False
    keep = np.flatnonzero(mask).astype(np.int64)
    thresholds = {
        "repeat_min_copies": float(repeat_min_copies),
        "class_z": class_z,
        "class_min_stats": float(class_min_stats),
        "forest_z": forest_z,
    }
    return CleaningReport(n_input=n, keep=keep, groups=tuple(groups), thresholds=thresholds)


def warm_up() -> threading.Thread:
    """Import scikit-learn's IsolationForest in a background thread (about a second of imports)
    while the caller reads the data; joining is optional, a later import simply waits for it."""

    def _import() -> None:
        import sklearn.ensemble  # noqa: F401

    thread = threading.Thread(target=_import, name="blood-automl-sklearn-import", daemon=True)
    thread.start()
    return thread
