"""Fixtures for trainer tests: the genuine MobileNet ImageNet file read layer by layer, a small real split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mobilenet_file_weights(mobilenet_weights_path: Path) -> dict[str, list[np.ndarray]]:
    """The arrays of the shared ImageNet file, grouped by layer name (as stored in the h5 file)."""
    h5py = pytest.importorskip("h5py")
    by_layer: dict[str, list[np.ndarray]] = {}
    with h5py.File(mobilenet_weights_path, "r") as f:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                by_layer.setdefault(name.split("/")[0], []).append(np.asarray(obj))

        f.visititems(visit)
    return by_layer


def same_arrays(expected: list[np.ndarray], actual: list[np.ndarray]) -> bool:
    """Whether two lists of arrays hold the same values, regardless of order."""

    def key(a: np.ndarray) -> tuple[int, float]:
        return (a.size, float(a.ravel()[0]))

    e = sorted((a.ravel() for a in expected), key=key)
    a = sorted((np.asarray(x).ravel() for x in actual), key=key)
    return len(e) == len(a) and all(np.array_equal(x, y) for x, y in zip(e, a, strict=True))


@pytest.fixture(scope="session")
def real_split(pbc_small: dict[str, np.ndarray]) -> dict[str, object]:
    """A stratified 1,200 / 480 / 720 split of the real PBC sample."""
    from sklearn.model_selection import train_test_split

    x, y = pbc_small["images"], pbc_small["labels"].astype(np.int64)
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, train_size=1200, stratify=y, random_state=0)
    va, te = train_test_split(rest, train_size=480, stratify=y[rest], random_state=0)
    return {
        "x_train": x[tr],
        "y_train": y[tr],
        "x_val": x[va],
        "y_val": y[va],
        "x_test": x[te],
        "y_test": y[te],
        "class_names": tuple(str(c) for c in pbc_small["class_names"]),
    }
