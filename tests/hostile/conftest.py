"""Fixtures the hostile-input cases share: a study made by a real search, small exported models."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import make_images
from hostile.harness import CLASS_NAMES, Models, Searched, run_cli


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """Run ``search --preset smoke --weights none --trials 1`` once on small synthetic images."""
    folder = tmp_path_factory.mktemp("searched")
    images, labels = make_images(96, size=96, seed=1)
    np.savez(folder / "train.npz", images=images, labels=labels)
    url = f"sqlite:///{folder / 'store' / 'studies.db'}"
    argv = ["search", "--data", "train.npz", "--study", "fx", "--storage", url]
    argv += ["--preset", "smoke", "--weights", "none", "--trials", "1", "--no-recipes"]
    argv += ["--no-clean", "--workers", "1"]
    result = run_cli(argv, cwd=folder)
    assert result.returncode == 0, result.stderr[-4000:]
    con = sqlite3.connect(folder / "store" / "studies.db")
    try:
        (complete,) = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()
    finally:
        con.close()
    assert complete == 1, f"the smoke search completed {complete} trials: {result.stdout}"
    return Searched(folder=folder, url=url, study="fx")


def _save_export(folder: Path, model: Any) -> None:
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    config = {"class_names": CLASS_NAMES, "image_size": 96}
    (folder / "config.json").write_text(json.dumps(config))


def _touching(path: str) -> Callable[[Any], Any]:
    """A lambda (saved as Python bytecode by Keras) that creates ``path`` whenever it runs."""
    return lambda x: [open(path, "w").write("ran"), x][1]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A tiny real Keras export, one whose Lambda layer would write a marker, and a junk zip."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    good = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, activation="softmax"),
        ]
    )
    _save_export(folder / "good", good)
    marker = folder / "LAMBDA_RAN"

    evil = keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            keras.layers.Lambda(_touching(str(marker))),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, activation="softmax"),
        ]
    )
    _save_export(folder / "lambda", evil)
    marker.unlink(missing_ok=True)  # building the model ran the function once, here
    keras.saving.load_model(folder / "lambda" / "model.keras", safe_mode=False)
    assert marker.exists()  # the payload is live: loading without safe mode runs it...
    marker.unlink()  # ...so predict (safe mode) must refuse it without running it
    (folder / "junk").mkdir()
    with zipfile.ZipFile(folder / "junk" / "model.keras", "w") as z:
        z.writestr("config.json", "{this is not json")
    (folder / "junk" / "config.json").write_text(
        json.dumps({"class_names": CLASS_NAMES, "image_size": 96})
    )
    return Models(folder=folder, lambda_marker=marker)
