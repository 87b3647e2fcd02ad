"""The main job end to end on real images: search, resume, refit-best, and the exported model
loaded in a fresh process giving the test accuracy that metrics.json reports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow

STUDY = "e2e"


def _storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'studies' / 'e2e.db'}"


def _search(tmp: Path, trials: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "search",
        "--trials",
        str(trials),
        "--study",
        STUDY,
        "--storage",
        _storage(tmp),
        "--preset",
        "smoke",
        "--weights",
        "none",
        *extra,
        cwd=tmp,
    )


def test_search_resume_refit_and_exported_model(small_real_npz: Path, tmp_path: Path) -> None:
    first = _search(tmp_path, 2, "--data", str(small_real_npz))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 finished" in first.stdout
    assert "next: blood-automl refit-best --study e2e" in first.stdout

    # Resume to a larger count without --data: the study's prepared data is used, and the
    # study ends with exactly 3 finished trials.
    second = _search(tmp_path, 3)
    assert second.returncode == 0, second.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=_storage(tmp_path))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3
    assert [t.number for t in study.trials] == [0, 1, 2]
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert {"config", "val_metrics", "history", "epochs", "seed"} <= set(t.user_attrs)
            # The pruner saw the epochs of the last phase (fine-tuning), counted from 1.
            phases = [row["phase"] for row in t.user_attrs["history"]]
            last = phases.count("finetune") or phases.count("head")
            assert sorted(t.intermediate_values) == list(range(1, last + 1))
    attrs = study.user_attrs
    assert attrs["space_name"] == "smoke" and attrs["weights"] == "none"
    assert len(attrs["data_fingerprint"]) == 64
    # Per-trial confusion matrix and curves are in Optuna's artifact store for the dashboard.
    artifacts = list((tmp_path / "studies" / STUDY / "artifacts").iterdir())
    n_complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len(artifacts) == 2 * n_complete

    refit = run_cli("refit-best", "--study", STUDY, "--storage", _storage(tmp_path), cwd=tmp_path)
    assert refit.returncode == 0, refit.stderr[-3000:]
    out = tmp_path / "exports" / STUDY
    expected_files = {
        "model.keras",
        "saved_model",
        "config.json",
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "training_curves.png",
        "MODEL_CARD.md",
        "model.onnx",
        "model.tflite",
        "reliability_diagram.png",
        "gradcam.png",
    }
    assert expected_files <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    best = study.best_trial
    assert config["trial"] == best.number and config["params"] == best.params
    assert config["data_fingerprint"] == attrs["data_fingerprint"]
    assert config["space_version"] == attrs["space_version"]
    assert {"optuna", "tensorflow", "keras", "numpy", "python"} <= set(config["versions"])
    metrics = json.loads((out / "metrics.json").read_text())
    refit_attr = (
        study.user_attrs
        if False
        else optuna.load_study(study_name=STUDY, storage=_storage(tmp_path)).user_attrs[
            f"refit_trial_{best.number}"
        ]
    )
    assert refit_attr["test_accuracy"] == metrics["accuracy"]
    # Calibrated by default: a temperature fitted on the validation split, test ECE reported.
    calibration = metrics["calibration"]
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    assert calibration["temperature"] == config["temperature"]
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"]
    assert {"test_ece_before", "test_ece_after"} <= set(calibration)
    assert f"T = {calibration['temperature']:.4f}" in (out / "MODEL_CARD.md").read_text()
    print(
        f"refit calibration: T={calibration['temperature']:.3f}, test ECE "
        f"{calibration['test_ece_before']:.4f} -> {calibration['test_ece_after']:.4f}"
    )

    # A second refit into the same folder is refused and leaves it as it was.
    again = run_cli("refit-best", "--study", STUDY, "--storage", _storage(tmp_path), cwd=tmp_path)
    assert again.returncode == 1
    assert (
        again.stderr.strip().startswith("error: the export folder")
        and "--overwrite" in again.stderr
    )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # Marked as an export (so only a later --overwrite replaces it), readable by others.
    assert json.loads((out / ".blood-automl-export").read_text())["kind"] == "export"
    modes = {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes == {0o644}
    assert {p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")] if p.is_dir()} == {0o755}
    assert [p.name for p in out.parent.iterdir()] == [STUDY]  # no temporary left beside it

    # The exported model, in a fresh process with Keras safe mode, on raw uint8 test images.
    code = f"""
import json, numpy as np, keras
from blood_automl.data import load_prepared
data = load_prepared({str(tmp_path / "studies" / STUDY / "data")!r})
model = keras.saving.load_model({str(out / "model.keras")!r}, safe_mode=True)
x = np.asarray(data.x_test)
assert x.dtype == np.uint8
probs = model.predict(x, verbose=0)
print(json.dumps({{"accuracy": float((probs.argmax(1) == np.asarray(data.y_test)).mean()),
                  "n": int(len(x)), "sum": float(probs.sum(1).mean())}}))
"""
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    got = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert got["n"] == metrics["n"]
    assert got["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert got["sum"] == pytest.approx(1.0, abs=1e-4)
    report = (out / "classification_report.txt").read_text()
    assert "basophil" in report and "macro avg" in report

    # The SQLite file is sound after all of it.
    with sqlite3.connect(tmp_path / "studies" / "e2e.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_refit_with_no_completed_trial_says_so_and_writes_nothing(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    result = run_cli("refit-best", "--study", STUDY, "--storage", storage, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no completed trial" in lines[0]
    assert not (tmp_path / "exports").exists()


def test_missing_study_for_refit_is_one_line(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="other", storage=storage, direction="maximize")
    result = run_cli("refit-best", "--study", "nope", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "other" in lines[0]
    assert not (tmp_path / "exports").exists()
