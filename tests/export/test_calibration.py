"""Temperature calibration: the fit, the expected calibration error, the fold into a Keras model,
the reliability diagram and the model card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blood_automl.export.calibration import (
    N_BINS,
    apply_temperature,
    at_bound,
    calibrate,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    log_probabilities,
    negative_log_likelihood,
    reliability_bins,
)
from blood_automl.export.calibration import softmax as _softmax


def _calibrated(n: int, classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is exactly calibrated: each label is drawn from its probabilities."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, classes))
    probs = _softmax(logits)
    labels = (probs.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


# -- numpy ---------------------------------------------------------------------------------


def test_ece_of_perfectly_calibrated_probabilities_is_near_zero() -> None:
    logits, labels = _calibrated(40_000)
    assert expected_calibration_error(_softmax(logits), labels) < 0.01


def test_ece_of_a_known_case() -> None:
    # 10 images at confidence 0.9 of which 6 right: one bin, |0.6 - 0.9| = 0.3.
    probs = np.tile([0.9, 0.1], (10, 1))
    labels = np.array([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)
    bins = reliability_bins(probs, labels)
    assert len(bins) == N_BINS == 15
    full = [b for b in bins if b["count"]]
    assert len(full) == 1 and full[0]["lo"] < 0.9 <= full[0]["hi"]
    assert full[0]["accuracy"] == pytest.approx(0.6) and full[0]["confidence"] == 0.9


def test_fit_lowers_nll_and_ece_of_over_confident_probabilities() -> None:
    logits, labels = _calibrated(6000, seed=1)
    over = 3.0 * logits  # three times too sharp
    val, test = slice(0, 3000), slice(3000, None)
    t = fit_temperature(over[val], labels[val])
    assert t == pytest.approx(3.0, rel=0.1)
    assert negative_log_likelihood(over[val], labels[val], t) < negative_log_likelihood(
        over[val], labels[val]
    )
    before = expected_calibration_error(_softmax(over[test]), labels[test])
    after = expected_calibration_error(_softmax(over[test], t), labels[test])
    print(f"synthetic x3: T={t:.3f} test ECE {before:.4f} -> {after:.4f}")
    assert before > 0.1 and after < 0.04
    # The predicted class never changes.
    assert np.array_equal(_softmax(over, t).argmax(1), over.argmax(1))
    # Probabilities alone (their logs as logits) give the same fit when none underflows.
    assert fit_temperature(log_probabilities(_softmax(over[val])), labels[val]) == pytest.approx(
        t, rel=1e-3
    )


def test_fit_of_calibrated_and_under_confident_probabilities() -> None:
    logits, labels = _calibrated(6000, seed=2)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)
    assert fit_temperature(0.5 * logits, labels) == pytest.approx(0.5, rel=0.1)
    assert not at_bound(fit_temperature(logits, labels))


def test_logits_that_know_nothing_end_at_the_upper_bound() -> None:
    rng = np.random.default_rng(6)
    logits, labels = rng.normal(size=(2000, 8)), rng.integers(0, 8, 2000)
    t = fit_temperature(logits, labels)
    assert at_bound(t) and t == pytest.approx(100.0, rel=1e-3)
    assert negative_log_likelihood(logits, labels, t) == pytest.approx(np.log(8), abs=1e-3)


def test_apply_temperature_divides_the_logits() -> None:
    logits, _ = _calibrated(50, seed=3)
    np.testing.assert_allclose(
        apply_temperature(_softmax(logits), 2.5), _softmax(logits / 2.5), atol=1e-9
    )
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(_softmax(logits), 0.0)


def test_calibration_metrics_hold_what_metrics_json_promises() -> None:
    logits, labels = _calibrated(4000, seed=4)
    over = _softmax(4.0 * logits)
    fitted = calibrate(4.0 * logits[:2000], labels[:2000])
    assert fitted.validation_nll_after < fitted.validation_nll_before
    assert fitted.validation_ece_after < fitted.validation_ece_before
    test_after = apply_temperature(over[2000:], fitted.temperature)
    entry = calibration_metrics(fitted, over[2000:], test_after, labels[2000:])
    json.dumps(entry)  # JSON-able as it is
    assert entry["method"] == "temperature" and entry["temperature"] == fitted.temperature
    assert entry["test_ece_after"] < entry["test_ece_before"]
    assert sum(b["count"] for b in entry["test_reliability_after"]) == 2000
    plain = calibration_metrics(None, over[2000:], None, labels[2000:])
    assert plain["method"] == "none" and "temperature" not in plain
    assert plain["test_ece_before"] == entry["test_ece_before"]


# -- the exported files --------------------------------------------------------------------


def _export_config() -> dict[str, object]:
    from blood_automl.export.card import manifest_summary

    manifest = {
        "source": "pbc.npz",
        "n_input": 110,
        "n_kept": 100,
        "cleaning": True,
        "removed": [{"reason": "exact duplicate", "count": 10, "indices": [1], "kind": "x"}],
        "split": {
            "train": {"basophil": 30, "eosinophil": 30},
            "val": {"basophil": 10, "eosinophil": 10},
            "test": {"basophil": 10, "eosinophil": 10},
        },
    }
    return {
        "study": "s1",
        "trial": 3,
        "finished_trials": 7,
        "params": {"backbone": "MobileNet-0.25", "head_lr": 0.001},
        "validation": {"objective": "accuracy", "value": 0.91},
        "space_name": "smoke",
        "space_version": 2,
        "data_fingerprint": "ab" * 32,
        "data": manifest_summary(manifest),
        "class_names": ["basophil", "eosinophil"],
        "image_size": 96,
        "weights": "none",
        "seed": 5,
        "epochs": {"head": 1, "finetune": 2},
        "trained_on": {"train": 60, "validation": 20},
        "tested_on": 20,
        "created": "2026-01-01T00:00:00+00:00",
    }


def _export_metrics() -> dict[str, object]:
    logits, labels = _calibrated(400, classes=2, seed=5)
    over = _softmax(5.0 * logits)
    fitted = calibrate(5.0 * logits[:200], labels[:200])
    after = apply_temperature(over[200:], fitted.temperature)
    return {
        "accuracy": 0.85,
        "balanced_accuracy": 0.84,
        "macro_f1": 0.83,
        "n": 20,
        "per_class": {
            "basophil": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10},
            "eosinophil": {"precision": 0.8, "recall": 0.9, "f1": 0.85, "support": 10},
        },
        "calibration": calibration_metrics(fitted, over[200:], after, labels[200:]),
    }


def test_model_card_says_what_the_model_is_and_how_to_use_it() -> None:
    from blood_automl.export.card import model_card

    metrics = _export_metrics()
    text = model_card(_export_config(), metrics)
    cal = metrics["calibration"]
    assert isinstance(cal, dict)
    for expected in (
        "`basophil`, `eosinophil`",
        "| basophil | 30 | 10 | 10 |",
        "| **all** | 60 | 20 | 20 |",
        "ab" * 32,
        "100 of 110 images kept (removed: 10 exact duplicate)",
        "Study `s1`, trial 3 of 7 finished trials",
        "`smoke` version 2",
        "| head_lr | `0.001` |",
        "| eosinophil | 0.8000 | 0.9000 | 0.8500 | 10 |",
        f"T = {cal['temperature']:.4f}",
        f"{cal['test_ece_before']:.4f} before, {cal['test_ece_after']:.4f} after",
        "not a diagnostic device",
        "one laboratory",
        "keras.saving.load_model",
        "(N, 96, 96, 3)",
    ):
        assert expected in text, expected
    assert "search interval" not in text
    chance = dict(metrics, calibration=dict(cal, temperature=100.0, temperature_at_bound=True))
    assert "search interval (0.01 to 100)" in model_card(_export_config(), chance)
    plain = dict(metrics, calibration=calibration_metrics(None, np.eye(2), None, np.arange(2)))
    assert "--no-calibration" in model_card(_export_config(), plain)


def test_model_card_lists_the_portable_files_kept_and_why_one_is_missing() -> None:
    from blood_automl.export.card import model_card

    portable = {
        "onnx": {
            "status": "ok",
            "file": "model.onnx",
            "agreement": 1.0,
            "max_abs_diff": 3e-7,
            "checked_on": {"images": 480, "source": "test"},
        },
        "litert": {
            "status": "not installed",
            "file": None,
            "warning": "model.tflite not written: needs 'ai-edge-litert'",
        },
    }
    text = model_card(_export_config(), dict(_export_metrics(), portable=portable))
    assert "`model.onnx`, ONNX (onnxruntime): same class on 100.00% of 480 test images" in text
    assert "LiteRT (ai-edge-litert): model.tflite not written: needs 'ai-edge-litert'" in text
    assert "Portable files" not in model_card(_export_config(), _export_metrics())


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    from blood_automl.export.bundle import reliability_diagram

    cal = _export_metrics()["calibration"]
    assert isinstance(cal, dict)
    path = reliability_diagram(cal, tmp_path / "r.png", "trial 3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# -- Keras ---------------------------------------------------------------------------------


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping Gaussian classes in 4 dimensions."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = np.array([[0, 0, 0, 0], [1.2, 0, 0.5, 0], [0, 1.2, 0, 0.5]], dtype=float)
    return (centres[labels] + rng.normal(size=(n, 4))).astype(np.float32), labels


def _over_confident_model() -> Any:
    """Logistic regression as a Keras model (``logits`` -> ``probabilities``), logits x 10."""
    import keras
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(3000, seed=0)
    fit = LogisticRegression(max_iter=1000).fit(x, y)
    inputs = keras.Input(shape=(4,), name="features")
    dense = keras.layers.Dense(3, name="logits")
    outputs = keras.layers.Activation("softmax", name="probabilities")(dense(inputs))
    model = keras.Model(inputs, outputs, name="toy")
    dense.set_weights([10.0 * fit.coef_.T, 10.0 * fit.intercept_])
    return model


def test_tiny_over_confident_keras_model_gets_t_above_one_and_lower_ece() -> None:
    from blood_automl.export.calibration import logits_model, with_temperature

    model = _over_confident_model()
    x_val, y_val = _blobs(2000, seed=1)
    x_test, y_test = _blobs(3000, seed=2)
    val_logits = np.asarray(logits_model(model).predict(x_val, verbose=0))
    fitted = calibrate(val_logits, y_val)
    assert fitted.temperature > 3.0  # the logits were made 10 times too large
    assert fitted.validation_nll_after < fitted.validation_nll_before

    calibrated = with_temperature(model, fitted.temperature)
    before = np.asarray(model.predict(x_test, verbose=0))
    after = np.asarray(calibrated.predict(x_test, verbose=0))
    ece_before = expected_calibration_error(before, y_test)
    ece_after = expected_calibration_error(after, y_test)
    print(f"toy Keras model: T={fitted.temperature:.3f} ECE {ece_before:.4f} -> {ece_after:.4f}")
    assert ece_before > 0.1 and ece_after < ece_before / 2
    assert np.array_equal(after.argmax(1), before.argmax(1))  # accuracy unchanged
    test_logits = np.asarray(logits_model(model).predict(x_test, verbose=0))
    np.testing.assert_allclose(after, _softmax(test_logits, fitted.temperature), atol=1e-5)


def test_with_temperature_refuses_a_model_without_logits() -> None:
    import keras

    from blood_automl.export.calibration import with_temperature

    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="logits"):
        with_temperature(model, 2.0)


@pytest.mark.slow
def test_calibrated_trainer_model_loads_in_safe_mode_in_a_fresh_process(tmp_path: Path) -> None:
    from blood_automl.export.calibration import logits_model, with_temperature
    from blood_automl.spaces import TrialConfig
    from blood_automl.trainer import build_model

    model, _ = build_model(TrialConfig(backbone="MobileNet-0.25"), 8, image_size=32, weights="none")
    calibrated = with_temperature(model, 2.0)
    images = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    before = np.asarray(model.predict(images.astype(np.float32), verbose=0))
    after = np.asarray(calibrated.predict(images.astype(np.float32), verbose=0))
    logits = np.asarray(logits_model(model).predict(images.astype(np.float32), verbose=0))
    np.testing.assert_allclose(after, _softmax(logits, 2.0), atol=1e-5)
    calibrated.save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images)

    # No blood_automl import: plain Keras, safe mode.
    code = f"""
import json, numpy as np, keras
model = keras.saving.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
probs = model.predict(np.load({str(tmp_path / "images.npy")!r}).astype("float32"), verbose=0)
print(json.dumps(probs.tolist()))
"""
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    loaded = np.asarray(json.loads(fresh.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(loaded, after, atol=1e-5)
    assert np.array_equal(loaded.argmax(1), before.argmax(1))


def test_an_ensemble_export_names_its_member_trials_in_the_figure_titles() -> None:
    from blood_automl.export.bundle import figure_titles

    single = figure_titles({"study": "s", "trial": 3})
    assert single == ("trial 3 of study 's'", "trial 3 of study 's': refit on train + validation")
    title, curves = figure_titles(
        {"study": "s", "trial": 4, "members": [{"trial": 4}, {"trial": 1}]}
    )
    assert title == "ensemble of trials 4, 1 of study 's'"
    assert curves.startswith("ensemble member 0 (trial 4) of study 's'")
