"""A broken environment stops a search without counting the trial; options are checked up front;
a resumed study takes the settings it was made with for every option left out."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState

from blood_automl.errors import ConfigError, DataError, StorageError, WeightsFileError
from blood_automl.search.faults import classify
from blood_automl.search.options import (
    Capacity,
    SearchOptions,
    check_options,
    resolve_options,
)
from conftest import make_images

FAKE_TRAINER = Path(__file__).resolve().parent / "fake_trainer"
QUICK = ["--preset", "smoke", "--no-clean", "--no-recipes", "--image-size", "32"]


# -- which errors stop the search ----------------------------------------------------------


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except Exception as raised:
        return raised


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.EIO, "Input/output error"),
        sqlite3.OperationalError("disk I/O error"),
        sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked")),
        sqlalchemy.exc.DatabaseError("SELECT", {}, Exception("file is not a database")),
        StorageInternalError("An exception is raised during the commit."),
        DataError("prepared data changed on disk"),
        StorageError("the store cannot be reached"),
        WeightsFileError("weights file x.h5 cannot be loaded"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_disk_store_weights_and_data_errors_stop_the_search(exc: Exception) -> None:
    assert classify(exc) == "environment"


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError("out of memory building the model"),
        ValueError("Negative dimension size caused by subtracting 3 from 1"),
        FloatingPointError("the loss became NaN at epoch 2"),
        RuntimeError("the trial trained no epoch with validation data"),
        ConfigError("MobileNet-0.25 needs images of at least 32x32"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_configuration_that_cannot_train_fails_only_its_trial(exc: Exception) -> None:
    assert classify(exc) == "trial"


def test_an_error_raised_from_a_disk_error_is_an_environment_error() -> None:
    wrapped = _chained(RuntimeError("saving failed"), OSError(errno.ENOSPC, "disk full"))
    assert classify(wrapped) == "environment"
    assert classify(_chained(RuntimeError("bad layer"), ValueError("shape"))) == "trial"


# -- options ---------------------------------------------------------------------------------


ROOMY = Capacity(cores=8, memory=64 * 2**30)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SearchOptions(seed=2**32), "--seed must be at least 0 and at most 4294967295"),
        (SearchOptions(seed=-1), "--seed must be"),
        (SearchOptions(timeout=float("nan")), "--timeout must be"),
        (SearchOptions(timeout=float("inf")), "--timeout must be"),
        (SearchOptions(trials=10**9), "--trials must be"),
        (SearchOptions(image_size=-5), "image size must be in"),
        (SearchOptions(image_size=16, preset="smoke"), "too small for MobileNet-0.25"),
        (SearchOptions(image_size=24, preset="gpu"), "in the gpu space (it needs at least 32 px)"),
        (SearchOptions(workers=17), "--workers 17 is more than this machine can run"),
        (SearchOptions(study="../x"), "is not allowed"),
    ],
)
def test_option_values_no_search_can_run_with_are_refused(
    options: SearchOptions, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options(options, ROOMY)


def test_workers_are_limited_by_memory_and_cores() -> None:
    assert Capacity(cores=2, memory=24 * 2**30).workers == 4  # two a core
    assert Capacity(cores=16, memory=6 * 2**30).workers == 4  # 1.5 GiB each
    assert Capacity(cores=1, memory=2**30).workers == 1  # one always runs
    check_options(SearchOptions(workers=16), ROOMY)
    with pytest.raises(ConfigError, match="give --workers 4 or fewer"):
        check_options(SearchOptions(workers=5), Capacity(cores=2, memory=24 * 2**30))


def test_options_left_out_take_the_study_values_and_given_ones_stay() -> None:
    stored = {"weights": "none", "seed": 7, "objective": "macro_f1", "image_size": 64}
    notes: list[str] = []
    left_out = SearchOptions(given=frozenset({"objective"}), objective="accuracy")
    resolved = resolve_options(left_out, stored, notes)
    assert (resolved.weights, resolved.seed, resolved.image_size) == ("none", 7, 64)
    assert resolved.objective == "accuracy"  # given: kept, for the study to check
    assert resolved.given is None and "weights none" in notes[0]
    new_study = resolve_options(SearchOptions(given=frozenset()), None, [])
    assert (new_study.weights, new_study.seed) == ("imagenet", 0)


# -- through the CLI, with the fake trainer --------------------------------------------------


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(FAKE_TRAINER), os.environ.get("PYTHONPATH")) if p)
    full = dict(os.environ, PYTHONPATH=path, BLOOD_AUTOML_FAKE_TRAINER="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=cwd,
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    images, labels = make_images(64, size=32)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    return tmp_path


def _trials(folder: Path, study: str = "st") -> list[Any]:
    url = f"sqlite:///{folder / 'store.db'}"
    return optuna.load_study(study_name=study, storage=url).get_trials()


def _argv(*extra: str) -> list[str]:
    return ["search", "--storage", "sqlite:///store.db", "--study", "st", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_stops_the_search_with_exit_1_and_the_trial_is_not_counted(
    folder: Path, workers: int
) -> None:
    argv = _argv("--data", "data.npz", *QUICK, "--weights", "none", "--trials", "3")
    argv += ["--pruner", "none"]  # a trial pruned at its first report would not reach the fault
    result = _run([*argv, "--workers", str(workers)], folder, BLOOD_AUTOML_FAKE_RAISE="OSError:28")
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    trials = _trials(folder)
    assert 1 <= len(trials) <= workers  # every worker stopped at its first trial
    assert all("interrupted" in t.user_attrs for t in trials)  # none counted

    resumed = _run(_argv("--trials", "3", "--workers", "1"), folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = [t for t in _trials(folder) if "interrupted" not in t.user_attrs]
    assert len(done) == 3 and all(t.state != TrialState.FAIL for t in done)


@pytest.mark.slow
def test_a_failing_configuration_is_still_a_failed_trial_and_the_search_goes_on(
    folder: Path,
) -> None:
    argv = _argv("--data", "data.npz", *QUICK, "--weights", "none", "--trials", "2")
    result = _run([*argv, "--workers", "1"], folder, BLOOD_AUTOML_FAKE_RAISE="MemoryError")
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [t for t in _trials(folder) if t.state == TrialState.FAIL]
    assert failed and all("interrupted" not in t.user_attrs for t in failed)
    assert failed[0].user_attrs["fail_reason"] == "MemoryError: simulated MemoryError in training"


@pytest.mark.slow
def test_resume_without_the_flags_uses_the_study_settings(folder: Path) -> None:
    log = folder / "fake.jsonl"
    argv = _argv("--data", "data.npz", *QUICK, "--weights", "none", "--seed", "3")
    made = _run([*argv, "--objective", "macro_f1", "--trials", "1", "--workers", "1"], folder)
    assert made.returncode == 0, made.stderr[-3000:]

    resumed = _run(_argv("--trials", "2", "--workers", "1"), folder, BLOOD_AUTOML_FAKE_LOG=str(log))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "settings of the study:" in resumed.stdout
    (line,) = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["weights"] == "none"  # not imagenet, the default of a new study
    study = optuna.load_study(study_name="st", storage=f"sqlite:///{folder / 'store.db'}")
    assert (study.user_attrs["seed"], study.user_attrs["objective"]) == (3, "macro_f1")
    assert len(study.get_trials()) == 2

    refused = _run(_argv("--trials", "3", "--workers", "1", "--seed", "4"), folder)
    assert refused.returncode == 1 and "created with seed=3" in refused.stderr


def test_figures_that_cannot_be_written_leave_the_trial_complete(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process (no child): the upload fails with EROFS; the trained value is kept."""
    from rich.console import Console

    from blood_automl.search import objective as objective_module
    from blood_automl.search import run_search
    from blood_automl.search.run import SearchStopped

    monkeypatch.syspath_prepend(str(FAKE_TRAINER))
    fake = importlib.import_module("fake_blood_trainer")
    monkeypatch.setitem(sys.modules, "blood_automl.trainer", fake)

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", "figures")

    monkeypatch.setattr(objective_module, "_upload_figures", read_only)
    monkeypatch.chdir(folder)
    options = SearchOptions(
        data="data.npz",
        trials=2,
        study="st",
        storage="sqlite:///store.db",
        preset="smoke",
        weights="none",
        image_size=32,
        recipes=False,
        clean=False,
        isolate=False,
    )
    with pytest.raises(SearchStopped, match="trial 0 is complete and kept"):
        run_search(options, Console(quiet=True))
    (trial,) = _trials(folder)
    assert trial.state == TrialState.COMPLETE and trial.value is not None
    assert trial.user_attrs["warnings"] == [
        "figures not written: OSError: [Errno 30] Read-only file system: 'figures'"
    ]
