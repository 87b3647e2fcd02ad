"""Several workers on one SQLite study: exactly N trials, no lock errors, heartbeat re-runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest

from blood_automl.studies import (
    SURPLUS_ATTR,
    StudySettings,
    SurplusTrial,
    claim_slot,
    count_finished,
    create_or_load_study,
    get_study,
    open_storage,
    optimize_to_target,
    remaining_trials,
)

WORKER = Path(__file__).with_name("_worker.py")
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out, err)
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path | None]:
    """A storage URL and, for SQLite, its file: a file in tmp_path, or the session's PostgreSQL.

    The PostgreSQL variant uses the ``postgres_url`` fixture (tests/pg.py): the server in
    $BLOOD_AUTOML_TEST_POSTGRES_URL or a throwaway one; skipped when neither can be had.
    """
    if request.param == "sqlite":
        db = tmp_path / "par.db"
        return f"sqlite:///{db}", db
    url = request.getfixturevalue("postgres_url")  # postgresql+psycopg2://: plain Optuna reads it
    open_storage(url)  # the schema exists before a reader (a dashboard) looks
    return url, None


def _study_name(tmp_path: Path) -> str:
    """A study name of its own per test, since a PostgreSQL database outlives the test."""
    return f"t{uuid.uuid4().hex[:12]}"


def _run_parallel(
    tmp_path: Path, backend: tuple[str, Path | None], workers: int, target: int, sleep: float
) -> None:
    url, db = backend
    name = _study_name(tmp_path)
    stop = tmp_path / "stop"
    reader = _worker("read", url, name, "--stop-file", str(stop))
    t0 = time.monotonic()
    procs = [
        _worker(
            "run", url, name, "--target", str(target), "--worker", str(i), "--sleep", str(sleep)
        )
        for i in range(workers)
    ]
    results = [_finish(p) for p in procs]
    elapsed = time.monotonic() - t0
    stop.touch()
    read, read_err = _finish(reader)

    for _, err in [*results, (None, read_err)]:
        assert "locked" not in err.lower(), err
        assert "Traceback" not in err, err
    assert read["errors"] == []
    assert read["polls"] > 10
    ran = [r["ran"] for r, _ in results]
    assert sum(ran) == target, ran

    study = get_study(url, name)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if SURPLUS_ATTR not in t.user_attrs]
    assert count_finished(study) == target
    assert len(counted) == target
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in trials if t not in counted)
    assert len({t.user_attrs["pid"] for t in counted}) > 1  # the work was shared
    assert db is None or _integrity(db) == "ok"
    print(f"{workers} workers, {target} trials: {elapsed:.1f} s, ran {ran}, {len(trials)} rows")


def test_four_processes_finish_exactly_n_trials_while_a_reader_polls(
    tmp_path: Path, backend: tuple[str, Path | None]
) -> None:
    _run_parallel(tmp_path, backend, workers=4, target=30, sleep=0.01)


@pytest.mark.slow
def test_four_processes_finish_exactly_100_trials(
    tmp_path: Path, backend: tuple[str, Path | None]
) -> None:
    _run_parallel(tmp_path, backend, workers=4, target=100, sleep=0.05)


def test_threads_sharing_one_storage_finish_exactly_n_trials(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/t.db")
    settings = StudySettings(sampler="random", seed=1)
    create_or_load_study(storage, "t", settings)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            study = create_or_load_study(storage, "t", settings, worker=i)
            optimize_to_target(study, lambda t: t.suggest_float("x", 0, 1), 25, poll_interval=0.1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    study = get_study(storage, "t")
    assert count_finished(study) == 25
    assert remaining_trials(study, 25) == 0
    assert optimize_to_target(study, lambda t: 1.0, 25) == 0  # resuming at the target runs none


def test_surplus_trial_is_pruned_uncounted_and_its_queued_params_kept(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=False)
    study = create_or_load_study(storage, "s", StudySettings(sampler="random"))
    first, second = study.ask(), study.ask()
    assert remaining_trials(study, 3) == 1  # two running elsewhere count as taken
    study.enqueue_trial({"x": 0.25})
    queued = study.ask()  # pops the enqueued trial, number 2
    third = study.ask()
    claim_slot(first, 3)
    claim_slot(queued, 3)  # two trials ahead of it: it runs
    with pytest.raises(SurplusTrial, match="already has its 3 trials"):
        claim_slot(third, 3)
    assert third.study.get_trials()[third.number].user_attrs[SURPLUS_ATTR].startswith("not run")
    study.tell(third, state=optuna.trial.TrialState.PRUNED)
    with pytest.raises(SurplusTrial, match="queued again"):
        claim_slot(queued, 2)
    study.tell(queued, state=optuna.trial.TrialState.PRUNED)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": 0.25}]
    for t in (first, second):
        study.tell(t, 1.0)
    assert count_finished(study) == 2
    assert remaining_trials(study, 3) == 1
    ran = optimize_to_target(study, lambda t: t.suggest_float("x", 0, 1), 3)
    assert ran == 1
    assert count_finished(study) == 3
    last = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[-1]
    assert last.params == {"x": 0.25}  # the queued params ran within the target


def test_killed_worker_trial_is_failed_and_rerun_once_with_same_params(
    tmp_path: Path, backend: tuple[str, Path | None]
) -> None:
    url, db = backend
    name = _study_name(tmp_path)
    marker = tmp_path / "started"
    beat = ["--heartbeat", "1", "--grace", "2"]
    hung = _worker("hang", url, name, "--marker", str(marker), *beat)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()):
        assert hung.poll() is None, hung.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed_number = int(marker.read_text())
    os.kill(hung.pid, signal.SIGKILL)
    hung.communicate(timeout=30)

    study = get_study(url, name)
    (stale,) = study.get_trials()
    assert stale.state == optuna.trial.TrialState.RUNNING  # nobody told it: the process died

    result, err = _finish(_worker("run", url, name, "--target", "3", *beat))
    assert "locked" not in err.lower()
    trials = get_study(url, name).get_trials()
    failed = trials[killed_number]
    assert failed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == stale.params
    assert retry.system_attrs["retry_history"] == [killed_number]  # Optuna's bookkeeping
    assert result["ran"] == 3  # the re-run is one of the three
    assert count_finished(get_study(url, name)) == 3  # the failed one is superseded
    assert sum(t.state in FINISHED for t in trials) == 4
    assert db is None or _integrity(db) == "ok"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_left_running_without_a_heartbeat_is_failed_and_its_slot_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blood_automl.studies import budget

    monkeypatch.setattr(budget, "UNCLAIMED_GRACE", 0.5)  # the grace period (1 s) then rules
    storage = open_storage(f"sqlite:///{tmp_path}/u.db", heartbeat_interval=1, grace_period=1)
    study = create_or_load_study(storage, "u", StudySettings(sampler="random", seed=3))
    study.enqueue_trial({"x": 0.25})
    study.ask()  # a worker popped the queued trial and was stopped before its first heartbeat
    time.sleep(1.5)
    ran = optimize_to_target(
        study, lambda t: t.suggest_float("x", 0, 1), 2, poll_interval=0.1, timeout=60
    )
    orphan, *rest = study.get_trials()
    assert orphan.state == optuna.trial.TrialState.FAIL
    assert orphan.user_attrs["interrupted"] == "stopped before it ran"
    assert ran == 2 and count_finished(study) == 2  # it held no slot: two trials ran
    assert {"x": 0.25} in [t.params for t in rest if t.state.is_finished()]  # queued again
