"""Fixtures for search tests: a small real data file and a helper that runs the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_real_npz(
    pbc_small: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """50 real images per class (400), in the course-data npz format."""
    labels = pbc_small["labels"]
    keep = np.concatenate([np.flatnonzero(labels == c)[:50] for c in range(8)])
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(
        path,
        images=pbc_small["images"][keep],
        labels=labels[keep],
        class_names=pbc_small["class_names"],
    )
    return path


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``blood-automl ARGS`` in a fresh process, no stdin, quiet TensorFlow."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "blood_automl", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
