"""Make ``store_0_1.db``: a study as blood-automl 0.1 stored it, for the stored-records test.

Run with the version whose store is kept (the file in this folder was made at the commit
named in ``store_0_1.json``), from the repository root::

    python tests/search/data/make_store.py tests/search/data

It searches two smoke trials (no ImageNet weights) on the synthetic images of
``synthetic_npz`` and keeps the SQLite file; the data are made again, identical, by the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STUDY = "kept"
IMAGES = 160


def synthetic_npz(path: Path) -> Path:
    """160 class-dependent 96x96 images of 8 classes (the same bytes every time)."""
    rng = np.random.default_rng(11)
    labels = np.arange(IMAGES) % 8
    base = rng.integers(0, 256, size=(8, 1, 1, 3))
    noise = rng.integers(-40, 41, size=(IMAGES, 96, 96, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    names = np.array([f"class_{i}" for i in range(8)])
    np.savez(path, images=images, labels=labels.astype(np.int64), class_names=names)
    return path


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        data = synthetic_npz(Path(work) / "synthetic.npz")
        url = f"sqlite:///{Path(work) / 'studies' / 'store.db'}"
        argv = ["search", "--trials", "2", "--preset", "smoke", "--weights", "none"]
        argv += ["--data", str(data), "--study", STUDY, "--storage", url, "--no-recipes"]
        subprocess.run([sys.executable, "-m", "blood_automl", *argv], cwd=work, check=True)
        shutil.copyfile(Path(work) / "studies" / "store.db", out / "store_0_1.db")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (out / "store_0_1.json").write_text(
        json.dumps({"study": STUDY, "made_at_commit": commit}, indent=1) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
