"""Faults during a search: a trial that raises is recorded FAIL and the study goes on; a run of
failures stops the study with the reasons; SIGINT leaves a consistent, resumable study."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from blood_automl import trainer
from blood_automl.search import SearchOptions, SearchStopped, run_search

from .conftest import run_cli

pytestmark = pytest.mark.slow


def _options(tmp: Path, data: Path, trials: int, **kw: Any) -> SearchOptions:
    return SearchOptions(
        data=str(data),
        trials=trials,
        study="faults",
        storage=f"sqlite:///{tmp / 'f.db'}",
        preset="smoke",
        weights="none",
        recipes=False,
        isolate=False,  # training is monkeypatched in this process
        **kw,
    )


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_study_goes_on(
    small_real_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = trainer.train
    calls = {"n": 0}

    def flaky_train(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("simulated out of memory while building the model")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", flaky_train)
    result = run_search(_options(tmp_path, small_real_npz, 2), Console(quiet=True))
    trials = result.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == (
        "MemoryError: simulated out of memory while building the model"
    )
    assert result.counts["finished"] == 2


def test_five_failures_in_a_row_stop_the_study_with_the_reasons(
    small_real_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_train(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the GPU fell off the bus")

    monkeypatch.setattr(trainer, "train", broken_train)
    with pytest.raises(SearchStopped) as info:
        run_search(_options(tmp_path, small_real_npz, 20), Console(quiet=True))
    message = str(info.value)
    assert "5 trials failed in a row" in message and "the GPU fell off the bus" in message
    assert "\n" not in message
    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path / 'f.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_and_the_study_resumes(
    small_real_npz: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    args = ["--study", "sig", "--storage", storage, "--preset", "smoke", "--weights", "none"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blood_automl",
            "search",
            "--trials",
            "3",
            "--no-recipes",
            "--data",
            str(small_real_npz),
            *args,
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def first_trial_reported() -> bool:
        if proc.poll() is not None or not db.exists():
            return proc.poll() is not None
        try:
            with sqlite3.connect(db, timeout=5) as con:
                n = con.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone()[0]
        except sqlite3.Error:
            return False
        return bool(n)

    try:
        _wait_for(first_trial_reported, 400, "the first epoch to be reported")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "stopped by the user" in error_lines[0]
    assert "resume with: blood-automl search --study sig --trials 3" in error_lines[0]

    study = optuna.load_study(study_name="sig", storage=storage)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    interrupted = [t for t in study.trials if "interrupted" in t.user_attrs]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # Resume: the interrupted trial does not count, so the study still gets 3 real trials.
    resumed = run_cli("search", "--trials", "3", "--no-recipes", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name="sig", storage=storage)
    real = [t for t in study.trials if "interrupted" not in t.user_attrs]
    assert sum(t.state.is_finished() for t in real) == 3


def _die_without_a_word(conn: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_trial_process_killed_before_it_reports_is_a_death_not_a_message() -> None:
    import multiprocessing as mp

    from blood_automl.search.isolate import _died, _receive

    spawn = mp.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    child = spawn.Process(target=_die_without_a_word, args=(send,))
    child.start()
    send.close()
    child.join(60)
    assert receive.poll(0)  # the dead writer's end of file polls as readable...
    assert _receive(receive) is None  # ...but it is no outcome
    assert _died(child.exitcode) == (
        "the trial's process was killed by SIGKILL (the system may have run out of memory)"
    )


@pytest.mark.parametrize(("workers", "delay"), [("1", 0.5), ("1", 3.0), ("2", 3.0)])
def test_a_signal_before_the_first_trial_stops_cleanly(
    small_real_npz: Path, tmp_path: Path, workers: str, delay: float
) -> None:
    """SIGTERM while TensorFlow loads or the study is set up: one line, exit 130, no leftovers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the search itself keeps TensorFlow quiet
    argv = ["search", "--data", str(small_real_npz), "--preset", "smoke", "--weights", "none"]
    argv += ["--trials", "1", "--no-recipes", "--workers", workers]
    proc = subprocess.Popen(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the search finished before the signal came")  # a very fast machine
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode in (1, 130), err  # 1 when it landed while the data was prepared
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "stopped" in lines[0] and "Traceback" not in err
    leftovers = [p for p in tmp_path.rglob("*") if "tmp" in p.name]
    assert leftovers == []
