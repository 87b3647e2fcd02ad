"""What optuna-dashboard shows of a study: its objective's name, interrupted trials, the trial images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wsgiref.util
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna_dashboard import get_note, save_note

from blood_automl.studies import (
    StudySettings,
    create_or_load_study,
    open_storage,
    save_study_note,
    study_note,
)
from blood_automl.studies import study as study_module
from blood_automl.studies.budget import INTERRUPTED_ATTR, INTERRUPTED_NOTE, optimize_to_target

optuna.logging.set_verbosity(optuna.logging.ERROR)
FAKE_TRAINER = Path(__file__).parents[1] / "search" / "fake_trainer"


def _api(storage: optuna.storages.BaseStorage, path: str) -> Any:
    """GET ``path`` from optuna-dashboard's WSGI app, in this process."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage)
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))  # type: ignore[arg-type]
    assert status[0].startswith("200"), status
    return json.loads(body)


def _study_detail(storage: optuna.storages.BaseStorage, name: str) -> Any:
    summaries = _api(storage, "/api/studies")["study_summaries"]
    (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == name]
    return _api(storage, f"/api/studies/{study_id}")


@pytest.mark.parametrize(
    ("objective", "shown"),
    [
        ("accuracy", "validation accuracy"),
        ("balanced_accuracy", "validation balanced accuracy"),
        ("macro_f1", "validation macro F1"),
    ],
)
def test_the_dashboard_names_the_objective(tmp_path: Path, objective: str, shown: str) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    settings = StudySettings(objective=objective)  # type: ignore[arg-type]
    study = create_or_load_study(storage, "named", settings)
    assert study.metric_names == [shown]
    assert _study_detail(storage, "named")["objective_names"] == [shown]


def test_a_study_made_without_the_name_gets_it_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    with monkeypatch.context() as m:  # as blood-automl made studies before naming objectives
        m.setattr(study_module, "name_objective", lambda study, objective: None)
        old = create_or_load_study(storage, "old", StudySettings(objective="macro_f1"))
    assert old.metric_names is None
    resumed = create_or_load_study(storage, "old", StudySettings(objective="macro_f1"))
    assert resumed.metric_names == ["validation macro F1"]


def test_an_interrupted_trial_says_so_in_its_note(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = create_or_load_study(storage, "stopped", StudySettings())

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        save_note(trial, "| parameter | value |\n|---|---|\n| x | 0.5 |")
        raise KeyboardInterrupt  # what SIGINT or SIGTERM raises while the trial trains

    with pytest.raises(KeyboardInterrupt):
        optimize_to_target(study, objective, target=3)
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert INTERRUPTED_ATTR in trial.user_attrs
    shown = _study_detail(storage, "stopped")["trials"][0]
    assert shown["note"]["body"].startswith(INTERRUPTED_NOTE)
    assert shown["note"]["body"].endswith("| x | 0.5 |")  # the trial's own note is kept
    assert INTERRUPTED_ATTR in {a["key"] for a in shown["user_attrs"]}


def test_an_interrupted_trial_without_a_note_gets_one(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = create_or_load_study(storage, "bare", StudySettings())

    def objective(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize_to_target(study, objective, target=1)
    frozen = study.get_trials()[0]
    trial = optuna.Trial(study, frozen._trial_id)
    assert get_note(trial) == INTERRUPTED_NOTE


@pytest.mark.slow
def test_a_search_uploads_named_images_the_dashboard_shows(tmp_path: Path) -> None:
    """A real ``search`` (model training replaced by the fake trainer of tests/search)."""
    from conftest import make_images

    images, labels = make_images(120, size=32, seed=0)
    np.savez(tmp_path / "cells.npz", images=images, labels=labels)
    env = dict(os.environ, BLOOD_AUTOML_FAKE_TRAINER="1", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKE_TRAINER), env.get("PYTHONPATH")]))
    env.pop("BLOOD_AUTOML_ARTIFACT_ROOT", None)
    url = f"sqlite:///{tmp_path}/store/s.db"
    argv = ["search", "--data", "cells.npz", "--image-size", "32", "--preset", "smoke"]
    argv += ["--weights", "none", "--trials", "2", "--no-recipes", "--workers", "1"]
    argv += ["--study", "shown", "--storage", url, "--objective", "balanced_accuracy"]
    done = subprocess.run(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    from blood_automl.analysis.dashboard import StudiesArtifactStore

    storage = open_storage(url, heartbeat=False, existing=True)
    detail = _study_detail(storage, "shown")
    assert detail["objective_names"] == ["validation balanced accuracy"]
    completed = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert completed
    note = detail["note"]["body"]
    assert note.startswith("## shown: validation balanced accuracy, maximized")
    table = {line.split("|")[1].strip() for line in note.splitlines() if line.startswith("| ")}
    for trial in detail["trials"]:  # every name a trial's Parameter list shows is in the note
        assert {p["name"] for p in trial["params"]} <= table
    store = StudiesArtifactStore(storage, url, "shown")
    for trial in completed:
        names = sorted(a["filename"] for a in trial["artifacts"])
        number = trial["number"]
        assert names == [f"trial-{number}-confusion-matrix.png", f"trial-{number}-curves.png"]
        for artifact in trial["artifacts"]:
            assert artifact["mimetype"] == "image/png"
            with store.open_reader(artifact["artifact_id"]) as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_study_note_lists_the_searched_parameters_by_their_names(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = create_or_load_study(storage, "noted", StudySettings(objective="macro_f1", seed=4))
    assert study_note(study) is None  # no space stored: not a search's study (yet)
    space = {
        "name": "tiny",
        "version": "1-abc",
        "params": {
            "dense_width": {"choices": [32, 64]},
            "head_lr": {"low": 0.0001, "high": 0.01, "log": True},
            "unfreeze_fraction": {"low": 0.1, "high": 0.3, "log": False, "step": 0.1},
            "backbone": {"value": "MobileNet-0.25"},
        },
    }
    study.set_user_attr("space", space)
    save_study_note(study)
    save_study_note(study)  # unchanged: not written again
    note = get_note(study)
    assert note == study_note(study)
    assert note.startswith("## noted: validation macro F1, maximized")
    assert "| dense_width | one of 32, 64 |" in note
    assert "| head_lr | 0.0001 to 0.01 (log scale) |" in note
    assert "| unfreeze_fraction | 0.1 to 0.3 in steps of 0.1 |" in note
    assert "Fixed: backbone = MobileNet-0.25." in note
    system = storage.get_study_system_attrs(study._study_id)
    assert system["dashboard:note_ver"] == 1
    assert _study_detail(storage, "noted")["note"]["body"] == note
