"""Portable exports: model.onnx and model.tflite written, checked against Keras, and read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blood_automl.export.portable import (
    LITERT_FILE,
    MIN_AGREEMENT,
    ONNX_FILE,
    LiteRTRunner,
    OnnxRunner,
    agreement,
    portable_warnings,
    predict_all,
    write_portable,
)

pytestmark = pytest.mark.slow

CLASSES = [f"c{i}" for i in range(8)]
SIZE = 32


def _tiny(seed: int) -> Any:
    import keras

    from blood_automl.spaces import TrialConfig
    from blood_automl.trainer import build_model

    keras.utils.set_random_seed(seed)
    model, _ = build_model(
        TrialConfig(backbone="MobileNet-0.25"), 8, image_size=SIZE, weights="none"
    )
    # Untrained, it gives every image the same probabilities: a few steps make them differ.
    model.trainable = True
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # statistics of the images, not of random weights
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    images, labels = _images(48, seed=seed)
    model.fit(images.astype("float32"), labels, epochs=3, batch_size=16, verbose=0)
    return model


def _images(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 8
    base = rng.integers(0, 256, size=(8, 1, 1, 3))
    noise = rng.integers(-60, 61, size=(n, SIZE, SIZE, 3))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _export(out: Path, model: Any, images: np.ndarray, labels: np.ndarray) -> Path:
    from blood_automl.export.bundle import export_model
    from blood_automl.trainer import compute_metrics, predict

    metrics = compute_metrics(labels, predict(model, images), CLASSES)
    config = {"class_names": CLASSES, "image_size": SIZE, "study": "t", "trial": 0}
    return export_model(
        out,
        model=model,
        config=config,
        metrics=metrics,
        report="report\n",
        history=[{"step": 1, "loss": 1.0, "phase": "head"}],
        class_names=CLASSES,
        saved_model=False,
        test_images=images,
        test_labels=labels,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    images, labels = _images()
    out = _export(tmp_path_factory.mktemp("portable") / "export", _tiny(1), images, labels)
    return out, images, labels


def _keras_probs(folder: Path, images: np.ndarray) -> np.ndarray:
    import keras

    model = keras.saving.load_model(folder / "model.keras")
    return np.asarray(model.predict_on_batch(images.astype(np.float32)))


def test_export_holds_both_files_and_their_recorded_agreement_is_recomputed(
    exported: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    folder, images, _ = exported
    portable = json.loads((folder / "metrics.json").read_text())["portable"]
    reference = _keras_probs(folder, images)
    assert reference.std(axis=0).max() > 1e-4  # the images get different probabilities
    for key, file, runner in (
        ("onnx", ONNX_FILE, OnnxRunner),
        ("litert", LITERT_FILE, LiteRTRunner),
    ):
        entry = portable[key]
        assert entry["status"] == "ok" and entry["file"] == file, entry
        assert (folder / file).stat().st_size == entry["bytes"] > 1000
        assert entry["checked_on"] == {"images": len(images), "source": "test split"}
        assert entry["seconds"] > 0
        probs = predict_all(runner(folder / file), images, batch_size=20)
        assert probs.shape == (len(images), 8)
        again = agreement(reference, probs)
        assert (
            entry["agreement"] == pytest.approx(again["agreement"]) and again["agreement"] >= 0.99
        )
        assert entry["max_abs_diff"] == pytest.approx(again["max_abs_diff"], abs=1e-6)
        assert again["max_abs_diff"] < 1e-4
    assert portable_warnings({"portable": portable}) == []


def test_input_is_named_image_with_a_dynamic_batch(
    exported: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    folder, _, _ = exported
    onnx = OnnxRunner(folder / ONNX_FILE)
    assert onnx.input.name == "image" and not isinstance(onnx.input_shape[0], int)
    assert onnx.input_shape[1:] == (SIZE, SIZE, 3)
    lite = LiteRTRunner(folder / LITERT_FILE)
    assert lite.input_shape == (-1, SIZE, SIZE, 3) and "image" in lite.input["name"]
    one, three = np.zeros((1, SIZE, SIZE, 3)), np.zeros((3, SIZE, SIZE, 3))
    for runner in (onnx, lite):
        assert runner.predict_on_batch(three).shape == (3, 8)
        assert runner.predict_on_batch(one).shape == (1, 8)


def test_an_ensemble_converts_and_agrees(tmp_path: Path) -> None:
    from blood_automl.export.ensemble import soft_vote

    images, _ = _images(24, seed=3)
    ensemble = soft_vote([_tiny(2), _tiny(3)])
    found = write_portable(tmp_path, ensemble, images)
    for key in ("onnx", "litert"):
        assert found[key]["status"] == "ok", found[key]
        assert found[key]["agreement"] >= MIN_AGREEMENT and found[key]["max_abs_diff"] < 1e-4
    assert (tmp_path / ONNX_FILE).is_file() and (tmp_path / LITERT_FILE).is_file()


def test_the_check_fails_and_drops_files_that_disagree_with_the_model(tmp_path: Path) -> None:
    import keras

    images, _ = _images(40, seed=4)
    model = _tiny(5)
    # The reference always says the class the model ranks second: no top class can agree.
    second = np.argsort(np.asarray(model.predict_on_batch(images.astype(np.float32))), axis=1)
    flipped = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), model, keras.layers.Lambda(lambda p: 1.0 - p)]
    )
    assert np.all(second[:, -1] != second[:, 0])
    found = write_portable(tmp_path, model, images, reference=flipped)
    for key, file in (("onnx", ONNX_FILE), ("litert", LITERT_FILE)):
        entry = found[key]
        assert entry["status"] == "disagrees" and entry["file"] is None, entry
        assert entry["agreement"] < MIN_AGREEMENT
        assert file in entry["warning"] and "model.keras" in entry["warning"]
        assert not (tmp_path / file).exists()
    assert len(portable_warnings({"portable": found})) == 2


def test_a_missing_runtime_leaves_a_warning_and_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = _images(16, seed=6)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    found = write_portable(tmp_path, _tiny(7), images)
    for key, file in (("onnx", ONNX_FILE), ("litert", LITERT_FILE)):
        assert found[key]["status"] == "not installed"
        assert 'pip install "blood-automl[export]"' in found[key]["warning"]
        assert not (tmp_path / file).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_predict_and_evaluate_give_the_same_classes_on_every_format(
    exported: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder, images, labels = exported
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    predicted = {}
    for file in ("model.keras", ONNX_FILE, LITERT_FILE):
        out = tmp_path / f"{file}.csv"
        run = _cli(["predict", str(folder / file), "data.npz", "--out", str(out)], tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stderr.strip() == "", run.stderr  # no converter or runtime noise
        rows = out.read_text().splitlines()[1:]
        predicted[file] = [row.split(",")[3] for row in rows]
        ev = tmp_path / f"ev-{file}"
        run = _cli(
            ["evaluate", str(folder / file), "data.npz", "--out", str(ev), "--tta"], tmp_path
        )
        assert run.returncode == 0, run.stderr
        metrics = json.loads((ev / "metrics.json").read_text())
        predicted[f"ev {file}"] = metrics["confusion_matrix"]
        predicted[f"tta {file}"] = round(metrics["tta"]["accuracy"], 6)
    assert len(predicted["model.keras"]) == len(images)
    for file in (ONNX_FILE, LITERT_FILE):
        assert predicted[file] == predicted["model.keras"]
        assert predicted[f"ev {file}"] == predicted["ev model.keras"]
        assert predicted[f"tta {file}"] == predicted["tta model.keras"]


def test_real_images_agree(pbc_small: dict[str, np.ndarray], tmp_path: Path) -> None:
    from blood_automl.data.validate import resize_one

    pick = np.arange(0, len(pbc_small["images"]), 50)[:48]
    images = np.stack([resize_one(i, SIZE) for i in pbc_small["images"][pick]])
    found = write_portable(tmp_path, _tiny(8), images)
    for key in ("onnx", "litert"):
        assert found[key]["status"] == "ok" and found[key]["agreement"] >= MIN_AGREEMENT
        assert found[key]["checked_on"]["images"] == len(images)
