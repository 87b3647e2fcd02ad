"""Fixtures for the data tests: real PBC images with planted artefacts and duplicates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw


def cartoon(kind: int, size: int = 96) -> np.ndarray:
    """One of two distinct synthetic non-cell pictures (a smiley, a house), (size, size, 3) uint8."""
    s = size / 96
    if kind == 0:
        img = Image.new("RGB", (size, size), (250, 240, 120))
        d = ImageDraw.Draw(img)
        d.ellipse([18 * s, 18 * s, 78 * s, 78 * s], fill=(255, 220, 0), outline=(0, 0, 0), width=3)
        d.ellipse([35 * s, 38 * s, 42 * s, 45 * s], fill=(0, 0, 0))
        d.ellipse([55 * s, 38 * s, 62 * s, 45 * s], fill=(0, 0, 0))
        d.arc([32 * s, 45 * s, 66 * s, 68 * s], 20, 160, fill=(0, 0, 0), width=3)
    else:
        img = Image.new("RGB", (size, size), (120, 200, 255))
        d = ImageDraw.Draw(img)
        d.rectangle([0, 60 * s, size, size], fill=(60, 170, 60))
        d.polygon([(20 * s, 60 * s), (48 * s, 25 * s), (76 * s, 60 * s)], fill=(200, 40, 40))
        d.rectangle([28 * s, 60 * s, 68 * s, 85 * s], fill=(230, 200, 150))
    return np.asarray(img)


def far_outliers(cell: np.ndarray, seed: int = 1) -> np.ndarray:
    """Eight single pictures far from blood-cell images: black, white, noise, gradient,
    checkerboard, flat green, text on white, and a colour-inverted cell."""
    size = cell.shape[0]
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 255, size)
    gradient = np.stack(
        [np.tile(g, (size, 1)), np.tile(g[:, None], (1, size)), np.full((size, size), 128.0)], -1
    )
    board = ((np.indices((size, size)).sum(0) // 8) % 2 * 255).astype(np.uint8)
    text = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(text)
    for k in range(6):
        d.text((5, 5 + 14 * k), f"scan error {k}", fill=(0, 0, 0))
    return np.stack(
        [
            np.zeros((size, size, 3), np.uint8),
            np.full((size, size, 3), 255, np.uint8),
            rng.integers(0, 256, (size, size, 3)).astype(np.uint8),
            gradient.astype(np.uint8),
            np.stack([board] * 3, -1),
            np.tile(np.array([0, 200, 0], np.uint8), (size, size, 1)),
            np.asarray(text),
            255 - cell,
        ]
    )


@dataclass
class Planted:
    """Real images with planted artefacts and duplicates, and the ground truth of what is what."""

    images: np.ndarray
    labels: np.ndarray
    genuine: np.ndarray  # bool: an untouched real image (not involved in any planted duplicate)
    artefact: np.ndarray  # bool: a planted repeated cartoon or far outlier
    dup_same: list[tuple[int, int]]  # (original, copy) positions, same label: exactly one must stay
    dup_conflict: list[
        tuple[int, int]
    ]  # (original, copy) positions, different labels: both must go


def plant(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> Planted:
    """Plant two cartoons (400 and 50 copies, labels spread over classes), 8 far outliers,
    20 same-label duplicates and 10 conflicting-label duplicates into the real images, shuffled."""
    rng = np.random.default_rng(seed)
    n = len(images)
    n_classes = int(labels.max()) + 1
    picks = rng.choice(n, size=30, replace=False)
    same, conflict = picks[:20], picks[20:]
    extra_images = [np.repeat(cartoon(0, images.shape[1])[None], 400, 0)]
    extra_labels = [rng.integers(0, n_classes, 400)]
    extra_images.append(np.repeat(cartoon(1, images.shape[1])[None], 50, 0))
    extra_labels.append(rng.integers(0, n_classes, 50))
    singles = far_outliers(images[int(rng.integers(n))])
    extra_images.append(singles)
    extra_labels.append(rng.integers(0, n_classes, len(singles)))
    extra_images.append(images[same])
    extra_labels.append(labels[same])
    extra_images.append(images[conflict])
    extra_labels.append((labels[conflict] + 1 + rng.integers(0, n_classes - 1, 10)) % n_classes)
    all_images = np.concatenate([images, *extra_images])
    all_labels = np.concatenate([labels, *extra_labels]).astype(np.int64)
    kind = np.zeros(len(all_images), dtype=np.int8)  # 0 genuine, 1 artefact, 2 dup copy
    n_art = 400 + 50 + len(singles)
    kind[n : n + n_art] = 1
    kind[n + n_art :] = 2
    copy_of = np.full(len(all_images), -1)
    copy_of[n + n_art :] = np.concatenate([same, conflict])
    order = rng.permutation(len(all_images))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    dup_same = [(int(position[o]), int(position[n + n_art + k])) for k, o in enumerate(same)]
    dup_conflict = [
        (int(position[o]), int(position[n + n_art + 20 + k])) for k, o in enumerate(conflict)
    ]
    involved = np.zeros(len(all_images), dtype=bool)
    involved[[p for pair in dup_same + dup_conflict for p in pair]] = True
    kind = kind[order]
    return Planted(
        images=all_images[order],
        labels=all_labels[order],
        genuine=(kind == 0) & ~involved,
        artefact=kind == 1,
        dup_same=dup_same,
        dup_conflict=dup_conflict,
    )


@pytest.fixture(scope="session")
def planted(pbc_small: dict[str, np.ndarray]) -> Planted:
    """The real PBC sample with artefacts and duplicates planted (see :func:`plant`)."""
    return plant(pbc_small["images"], pbc_small["labels"])


def small_npz(path: Path, n: int = 40, size: int = 16, seed: int = 0, **extra: np.ndarray) -> Path:
    """Write a small valid .npz of synthetic images (``make_images``) and return its path."""
    from conftest import make_images

    images, labels = make_images(n, size=size, seed=seed)
    arrays = {"images": images, "labels": labels, **extra}
    np.savez(path, **arrays)
    return path
