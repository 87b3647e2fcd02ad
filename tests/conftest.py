"""Shared fixtures: the real data and weights in ../shared, small synthetic data, quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pg import postgres_url  # noqa: F401 (a fixture: the PostgreSQL server, see tests/pg.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BLOOD_AUTOML_SHARED", ROOT.parent / "shared"))
PBC_SMALL = SHARED / "data" / "pbc_96_small.npz"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(scope="session")
def pbc_small_path() -> Path:
    """Path of the 2,400 real PBC images; the test is skipped when the file is not there."""
    if not PBC_SMALL.is_file():
        pytest.skip(f"real PBC sample not found at {PBC_SMALL} (set BLOOD_AUTOML_SHARED)")
    return PBC_SMALL


@pytest.fixture(scope="session")
def pbc_small(pbc_small_path: Path) -> dict[str, np.ndarray]:
    """The arrays of the real PBC sample, loaded once per session (read-only)."""
    with np.load(pbc_small_path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


@pytest.fixture(scope="session")
def mobilenet_weights_path() -> Path:
    """Path of the genuine ImageNet no-top file for MobileNet alpha 0.25; skipped when absent."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"ImageNet weights file not found at {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


def make_images(
    n: int, size: int = 96, n_classes: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Small synthetic, class-dependent RGB uint8 images (distinct, no duplicates) and labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    base = rng.integers(0, 256, size=(n_classes, 1, 1, 3))
    noise = rng.integers(-40, 41, size=(n, size, size, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
