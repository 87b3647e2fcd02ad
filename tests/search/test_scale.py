"""Scale-out and crash recovery through the real search path, on SQLite and on PostgreSQL.

The tests run the ``blood-automl`` CLI in subprocesses (with the worker and trial processes
it spawns) with one thing replaced: model training, by ``fake_trainer/fake_blood_trainer.py``
(installed by the ``sitecustomize.py`` beside it), whose trials report a few epochs in a
fraction of a second. Storage, studies, sampling, pruning, heartbeats, signals, data
preparation, artifacts and the dashboard are the real ones. The 100-trial test calls
``run_search`` here instead (its four workers are still spawned processes), with trials
trained in their worker rather than in a process each, to stay within CI time.
PostgreSQL is the ``postgres_url`` fixture (tests/pg.py): skipped with its reason when no
server can be had.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from blood_automl.data import load_prepared
from blood_automl.search import SearchOptions, run_search
from blood_automl.search.run import resume_command
from blood_automl.signals import stop_signals
from blood_automl.studies import open_storage, study_dir
from blood_automl.studies.budget import INTERRUPTED_ATTR, SURPLUS_ATTR, count_finished, counted
from conftest import make_images

FAKE_DIR = Path(__file__).with_name("fake_trainer")

HOST = "127.0.0.1"
IMAGE_SIZE = 32  # the smallest MobileNet-0.25 (the smoke space) accepts
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
LOCK_WORDS = ("database is locked", "locked", "deadlock", "could not obtain lock")

optuna.logging.set_verbosity(optuna.logging.ERROR)


# -- helpers: data, storages, processes ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small, different data sets (8 classes, 32 px): the study's and a wrong one."""
    folder = tmp_path_factory.mktemp("scale-data")
    paths = []
    for seed in (0, 1):
        images, labels = make_images(120, size=IMAGE_SIZE, seed=seed)
        path = folder / f"cells-{seed}.npz"
        np.savez(path, images=images, labels=labels)
        paths.append(path)
    return paths[0], paths[1]


@dataclass(frozen=True)
class Store:
    """A study storage: its URL and, for SQLite, the database file."""

    url: str
    db: Path | None


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A SQLite file of this test, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        db = tmp_path / "work" / "studies" / "scale.db"
        return Store(f"sqlite:///{db}", db)
    return Store(request.getfixturevalue("postgres_url"), None)


def new_study(prefix: str) -> str:
    """A study name of its own (a PostgreSQL database outlives the test)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fake_env(**extra: Any) -> dict[str, str]:
    """The environment of a CLI run with the fake trainer installed (by sitecustomize)."""
    env = dict(os.environ)
    env.pop("BLOOD_AUTOML_ARTIFACT_ROOT", None)
    path = env.get("PYTHONPATH")
    env.update(
        PYTHONPATH=str(FAKE_DIR) + (os.pathsep + path if path else ""),
        BLOOD_AUTOML_FAKE_TRAINER="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def search_args(
    url: str, study: str, trials: int, *extra: str, data: Path | None = None
) -> list[str]:
    """``search`` on the smoke space from scratch, no recipes: what every test runs."""
    args = ["search", "--study", study, "--storage", url, "--trials", str(trials)]
    args += ["--preset", "smoke", "--weights", "none", "--no-recipes"]
    if data is not None:
        args += ["--data", str(data), "--image-size", str(IMAGE_SIZE)]
    return [*args, *extra]


@dataclass
class Run:
    """A CLI process started by :class:`Processes`, its output in two files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def tail(self) -> str:
        return f"stdout:\n{self.stdout()[-2000:]}\nstderr:\n{self.stderr()[-3000:]}"


class Processes:
    """Starts ``blood-automl`` in subprocesses (own session each) and kills what is left at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs: list[Run] = []

    def start(self, args: list[str], name: str, *, cwd: Path, env: dict[str, str]) -> Run:
        cwd.mkdir(parents=True, exist_ok=True)
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "blood_automl", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                start_new_session=True,
            )
        run = Run(proc, out, err)
        self.runs.append(run)
        return run

    def wait(self, run: Run, timeout: float) -> int:
        """The exit code; fails the test (killing the run) when it takes longer than ``timeout``.

        Before the kill, SIGUSR1 makes every process of the run print its threads' stacks
        (see fake_trainer/sitecustomize.py), so the failure shows where it hung.
        """
        try:
            return run.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGUSR1)
                time.sleep(2.0)
            self.kill(run)
            pytest.fail(f"{run.out.stem} did not end in {timeout:.0f} s\n{run.tail()}")

    def run(
        self, args: list[str], name: str, *, cwd: Path, env: dict[str, str], timeout: float
    ) -> Run:
        run = self.start(args, name, cwd=cwd, env=env)
        self.wait(run, timeout)
        return run

    @staticmethod
    def kill(run: Run) -> None:
        if run.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, signal.SIGKILL)  # the group of the session we started
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=10)

    def close(self) -> None:
        for run in self.runs:
            self.kill(run)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path / "logs")
    try:
        yield processes
    finally:
        processes.close()


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, run: Run | None = None
) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` s or if ``run`` ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"{run.out.stem} ended ({run.proc.returncode}) before {what}\n{run.tail()}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def trials_of(url: str, study: str) -> list[FrozenTrial]:
    """The study's trials as plain Optuna reads them; empty while there is no such study yet."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []  # connecting would create the file the search is about to make
    unready = (SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError)
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except unready:  # the search is creating the tables this moment
        return []
    try:
        names = {s.study_name for s in storage.get_all_studies()}
        if study not in names:
            return []
        return storage.get_all_trials(storage.get_study_id_from_name(study))
    except unready:
        return []
    finally:
        storage.engine.dispose()


def load(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=url)


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def no_lock_errors(*runs: Run) -> None:
    for run in runs:
        text = (run.stdout() + run.stderr()).lower()
        for word in LOCK_WORDS:
            assert word not in text, f"{word!r} in the output of {run.out.stem}\n{run.tail()}"
        assert "traceback" not in text, run.tail()


def error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr().splitlines() if line.startswith("error:")]


def fake_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fake_trainer() -> types.ModuleType:
    """The fake trainer module, loaded in this process (once) from fake_trainer/."""
    name = "fake_blood_trainer"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, FAKE_DIR / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


def fake_digest(*arrays: np.ndarray) -> str:
    """What the fake trainer logs for the data it was given (its own function)."""
    return str(fake_trainer().data_digest(*arrays))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class DashboardPoller(threading.Thread):
    """Polls a dashboard's API like an open browser tab: the study list and one study's trials."""

    def __init__(self, base: str, study: str) -> None:
        super().__init__(daemon=True)
        self.base, self.study = base, study
        self.halt = threading.Event()
        self.polls = 0  # successful rounds (both requests, or the list before the study exists)
        self.detail_polls = 0
        self.most_trials = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                listed = http_json(f"{self.base}/api/studies")["study_summaries"]
                ids = [s["study_id"] for s in listed if s["study_name"] == self.study]
                if ids:
                    detail = http_json(f"{self.base}/api/studies/{ids[0]}?after=0")
                    self.most_trials = max(self.most_trials, len(detail["trials"]))
                    self.detail_polls += 1
                self.polls += 1
            except urllib.error.HTTPError as e:
                self.errors.append(f"HTTP {e.code}: {e.read()[:300]!r}")
            except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
                self.errors.append(repr(e)[:300])
            self.halt.wait(0.3)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


@contextlib.contextmanager
def dashboard(
    procs: Processes, url: str, cwd: Path, name: str = "dashboard"
) -> Iterator[tuple[Run, str]]:
    """``blood-automl dashboard`` on ``url`` on a free loopback port, until the block ends."""
    port = free_port()
    run = procs.start(
        ["dashboard", "--storage", url, "--host", HOST, "--port", str(port), "--quiet"],
        name,
        cwd=cwd,
        env=fake_env(),
    )
    base = f"http://{HOST}:{port}"

    def answers() -> bool:
        try:
            http_json(f"{base}/api/meta", timeout=2.0)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    wait_for(answers, 60, "the dashboard to answer", run)
    try:
        yield run, base
    finally:
        run.proc.send_signal(signal.SIGINT)  # Ctrl-C: the dashboard returns
        try:
            run.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            procs.kill(run)


# -- process trees, from /proc ------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` now, with its start time (to tell a reused pid apart)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            parents.setdefault(info[0], []).append(int(entry))
            starts[int(entry)] = info[2]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` that still run (not gone, not a zombie, not a new process)."""
    alive = []
    for pid, start in processes.items():
        info = _stat(pid)
        if info is not None and info[2] == start and info[1] != "Z":
            alive.append(pid)
    return alive


# -- cheap checks: the resume command, the fake trainer ------------------------------------


def test_resume_command_repeats_the_options_a_resumed_study_checks() -> None:
    options = SearchOptions(
        study="s1",
        trials=7,
        storage="postgresql://u:pw@db/x",
        weights="none",
        seed=3,
        sampler="random",
        recipes=False,
        workers=4,
    )
    assert resume_command(options) == (
        "blood-automl search --study s1 --trials 7 --storage postgresql://u:***@db/x "
        "--weights none --seed 3 --sampler random --no-recipes --workers 4"
    )
    assert resume_command(SearchOptions(study="s2", trials=5)) == (
        "blood-automl search --study s2 --trials 5"
    )


class _SignalledInFinalizer:
    """An object whose ``__del__`` receives SIGTERM: Python ignores exceptions raised there."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(100_000))  # the signal handler runs in here


def test_a_stop_signal_during_garbage_collection_is_not_lost() -> None:
    with pytest.raises(KeyboardInterrupt), stop_signals():
        _SignalledInFinalizer()  # collected at once
        time.sleep(2.0)
        pytest.fail("the stop signal was lost in a finalizer")


def test_the_fake_trainer_replaces_training_only_where_it_is_asked_for(tmp_path: Path) -> None:
    probe = (
        "import sys, blood_automl.trainer as t, tensorflow as tf; "
        "print(getattr(t, 'FAKE', False), getattr(tf, 'FAKE', False), t.configure().gpus, "
        "t.weights_mode('None'), t.check_weights(['MobileNet-0.25'], 'none'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=fake_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "0", "none", "[]"]
    env = fake_env()
    del env["BLOOD_AUTOML_FAKE_TRAINER"]  # the folder on PYTHONPATH alone changes nothing
    probe = "import sys; print('blood_automl.trainer' in sys.modules, 'tensorflow' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]


# -- a. four workers, 100 trials, a dashboard polling -------------------------------------


@pytest.mark.slow
def test_four_workers_finish_exactly_100_trials_while_a_dashboard_polls(
    store: Store,
    tiny_data: tuple[Path, Path],
    tmp_path: Path,
    procs: Processes,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """run_search with --workers 4 (run_parallel: setup_search once, four spawned workers).

    In this process, with ``isolate=False``: each trial trains in its worker instead of a
    process of its own, since a Python process per trial makes 100 trials take minutes on
    two cores; the CLI tests below run trials isolated, as the CLI always does.
    """
    work, study, log = tmp_path / "work", new_study("pool"), tmp_path / "fake.jsonl"
    work.mkdir()
    monkeypatch.chdir(work)
    env = fake_env(BLOOD_AUTOML_FAKE_LOG=log, BLOOD_AUTOML_FAKE_SECONDS=0.02)
    for key in ("PYTHONPATH", "BLOOD_AUTOML_FAKE_TRAINER", "BLOOD_AUTOML_FAKE_LOG"):
        monkeypatch.setenv(key, env[key])  # the spawned workers install the fake themselves
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_SECONDS", env["BLOOD_AUTOML_FAKE_SECONDS"])
    fake = fake_trainer()
    monkeypatch.setitem(sys.modules, "blood_automl.trainer", fake)  # for setup_search here
    monkeypatch.setitem(sys.modules, "tensorflow", fake.fake_tensorflow())  # GPUs: none
    options = SearchOptions(
        data=str(tiny_data[0]),
        image_size=IMAGE_SIZE,
        trials=100,
        study=study,
        storage=store.url,
        preset="smoke",
        weights="none",
        recipes=False,
        workers=4,
        isolate=False,
    )
    open_storage(store.url, heartbeat=False)  # the storage exists before the dashboard opens it
    console = io.StringIO()
    t0 = time.monotonic()
    with dashboard(procs, store.url, work) as (board, base):
        poller = DashboardPoller(base, study)
        poller.start()
        try:
            result = run_search(options, Console(file=console, width=200))
            time.sleep(1.0)  # one more round after the end
        finally:
            poller.stop()
    elapsed = time.monotonic() - t0
    out, err = capfd.readouterr()  # the workers' output, for lock errors
    for text in (console.getvalue(), out, err, board.stdout(), board.stderr()):
        assert not [w for w in LOCK_WORDS if w in text.lower()], text[-3000:]
        assert "traceback" not in text.lower(), text[-3000:]
    assert result.counts["finished"] == 100

    trials = load(store.url, study).get_trials()
    real = counted(trials)
    surplus = [t for t in trials if SURPLUS_ATTR in t.user_attrs]
    assert sum(t.state in FINISHED for t in real) == 100
    assert len(real) == 100 and len(trials) == len(real) + len(surplus)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in real)
    assert all(t.state == TrialState.PRUNED for t in surplus)
    if surplus:  # the trials that ran are the first 100 the storage numbered
        assert max(t.number for t in real) < min(t.number for t in surplus)
    assert len({t.user_attrs["seed"] for t in real}) == 100

    # The four workers shared the work, each with its share of the CPU threads, all on the
    # data the coordinator prepared for the study (they were started without --data).
    lines = fake_log(log)
    assert len(lines) == 100
    assert len({line["pid"] for line in lines}) == 4
    assert {line["threads"] for line in lines} == {max(1, len(os.sched_getaffinity(0)) // 4)}
    prepared = load_prepared(work / study_dir(store.url, study) / "data")
    assert load(store.url, study).user_attrs["data_fingerprint"] == prepared.fingerprint
    digest = fake_digest(prepared.x_train, prepared.y_train, prepared.x_val, prepared.y_val)
    assert {line["data"] for line in lines} == {digest}

    # The dashboard answered all along and saw the trials come in.
    assert poller.errors == [], poller.errors[:5]
    assert poller.polls > 0 and poller.detail_polls > 0
    assert poller.most_trials >= 100
    if store.db is not None:
        assert integrity(store.db) == "ok"
    print(
        f"{store.url.split(':')[0]}: 100 trials, 4 workers in {elapsed:.1f} s; "
        f"{poller.polls} dashboard polls; {len(surplus)} surplus"
    )


# -- b. a worker killed in the middle of a trial ------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_and_rerun_once_after_a_restart(
    store: Store, tiny_data: tuple[Path, Path], tmp_path: Path, procs: Processes
) -> None:
    work, study, marker = tmp_path / "work", new_study("crash"), tmp_path / "hang.json"
    target = 6
    args = search_args(store.url, study, target, "--workers", "1", data=tiny_data[0])
    env = fake_env(
        BLOOD_AUTOML_HEARTBEAT_INTERVAL=1,  # failed as stale 2 s after its last heartbeat
        BLOOD_AUTOML_FAKE_HANG_MARKER=marker,  # the first trial past epoch 1 hangs there
        BLOOD_AUTOML_FAKE_SECONDS=0.02,
    )
    first = procs.start(args, "first", cwd=work, env=env)

    def hanging_trial() -> FrozenTrial | None:
        if not marker.is_file():
            return None
        running = [t for t in trials_of(store.url, study) if t.state == TrialState.RUNNING]
        return next((t for t in running if t.intermediate_values), None)

    hung = wait_for(hanging_trial, 120, "a trial to hang after its first epoch", first)
    tree = descendants(first.pid)  # the worker trains each trial in a child process
    assert json.loads(marker.read_text())["pid"] in {first.pid, *tree}
    before = {t.number: t for t in trials_of(store.url, study) if t.state.is_finished()}
    os.kill(first.pid, signal.SIGKILL)  # the worker: its sampler, heartbeat, trial child
    first.proc.wait(timeout=30)
    assert first.proc.returncode == -signal.SIGKILL
    wait_for(lambda: not still_running(tree), 30, "the killed worker's trial process to end")
    (stale,) = [t for t in trials_of(store.url, study) if t.number == hung.number]
    assert stale.state == TrialState.RUNNING  # nobody told the storage: the process died

    second = procs.run(args, "second", cwd=work, env=env, timeout=180)  # the same command again
    assert second.proc.returncode == 0, second.tail()
    no_lock_errors(second)
    trials = load(store.url, study).get_trials()
    by_number = {t.number: t for t in trials}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert count_finished(load(store.url, study)) == target

    # The killed trial: failed by the heartbeat, re-run exactly once with its parameters.
    failed = by_number[hung.number]
    assert failed.state == TrialState.FAIL
    assert INTERRUPTED_ATTR not in failed.user_attrs  # killed, not stopped by the user
    assert failed.intermediate_values == hung.intermediate_values
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == hung.number]
    assert len(retries) == 1, [(t.number, t.system_attrs) for t in trials]
    (retry,) = retries
    assert retry.params == hung.params
    assert retry.system_attrs["retry_history"] == [hung.number]  # Optuna's bookkeeping
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.number > hung.number

    # Nothing finished before the kill was lost or changed; nothing ran twice.
    for number, t in before.items():
        assert by_number[number].state == t.state and by_number[number].params == t.params
        assert by_number[number].value == t.value
    real = [t for t in counted(trials) if t.state.is_finished()]
    assert len(real) == target and retry in real and failed not in real
    assert len({json.dumps(t.params, sort_keys=True) for t in real}) == target
    assert f"this run: {target - len(before)}" in second.stdout(), second.tail()  # retry included
    if store.db is not None:
        assert integrity(store.db) == "ok"


# -- c. SIGTERM and Ctrl-C on a worker pool -----------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree in /proc")
@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM-to-the-parent", "SIGINT-to-the-process-group"],
)
def test_a_signal_stops_every_worker_of_a_pool_and_the_study_resumes(
    sig: signal.Signals,
    to_group: bool,
    tiny_data: tuple[Path, Path],
    tmp_path: Path,
    procs: Processes,
) -> None:
    # A target far above what the test waits for: on a loaded machine one worker can start
    # many seconds after the other, and a short study could end before both are seen training
    # at the same moment (6 trials once did). The stop comes long before the target is reached.
    work, study, target = tmp_path / "work", new_study("stop"), 40
    db = work / "studies" / "stop.db"
    url = f"sqlite:///{db}"
    # No pruner: trials pruned at their first epoch could let the pool finish before the two
    # workers are ever seen training at the same moment.
    args = search_args(url, study, target, "--workers", "2", "--pruner", "none", data=tiny_data[0])
    run = procs.start(args, "search", cwd=work, env=fake_env(BLOOD_AUTOML_FAKE_SECONDS=1.5))
    seen: dict[int, str] = {}

    def both_workers_training() -> bool:
        seen.update(descendants(run.pid))
        running = [t for t in trials_of(url, study) if t.state == TrialState.RUNNING]
        return len([t for t in running if t.intermediate_values]) == 2

    wait_for(both_workers_training, 120, "both workers to be training a trial", run)
    seen.update(descendants(run.pid))
    workers = [pid for pid in seen if "spawn_main" in _cmdline(pid)]
    assert len(workers) >= 2, {pid: _cmdline(pid) for pid in seen}
    if to_group:
        os.killpg(run.pid, sig)  # Ctrl-C in a terminal: every process of the job gets it
    else:
        os.kill(run.pid, sig)  # kill PID, a scheduler's stop: the parent alone
    assert procs.wait(run, 60) == 130, run.tail()

    lines = error_lines(run)
    assert len(lines) == 1, run.tail()
    assert "stopped by the user" in lines[0] and "resume with: " in lines[0]
    resume = lines[0].split("resume with: ", 1)[1]
    assert resume.startswith(f"blood-automl search --study {study} --trials {target}")
    assert "traceback" not in (run.stdout() + run.stderr()).lower(), run.tail()
    wait_for(lambda: not still_running(seen), 60, "every worker process to end")

    trials = load(url, study).get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    interrupted = [t for t in trials if INTERRUPTED_ATTR in t.user_attrs]
    assert 1 <= len(interrupted) <= 2, [(t.number, t.state, t.user_attrs) for t in trials]
    assert all(t.state == TrialState.FAIL for t in interrupted)
    assert integrity(db) == "ok"

    # The printed command, as printed, resumes the study to its target.
    argv = shlex.split(resume)
    assert argv[:2] == ["blood-automl", "search"]
    resumed = procs.run(argv[1:], "resume", cwd=work, env=fake_env(), timeout=240)
    assert resumed.proc.returncode == 0, resumed.tail()
    study_now = load(url, study)
    assert count_finished(study_now) == target
    trials = study_now.get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t not in counted(trials) for t in trials if INTERRUPTED_ATTR in t.user_attrs)
    assert integrity(db) == "ok"


# -- d. passwords in --storage URLs -------------------------------------------------------


def _database_rows_holding(url: str, text: str) -> list[str]:
    """Every row of every table of the database whose text holds ``text``."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        found = []
        with engine.connect() as con:
            for table in sqlalchemy.inspect(con).get_table_names():
                rows = con.exec_driver_sql(f'SELECT CAST(t AS text) FROM "{table}" t').scalars()
                found += [f"{table}: {row[:200]}" for row in rows if text in row]
        return found
    finally:
        engine.dispose()


@pytest.mark.slow
def test_storage_passwords_are_never_printed_logged_or_stored(
    postgres_url: str, tiny_data: tuple[Path, Path], tmp_path: Path, procs: Processes
) -> None:
    from sqlalchemy.engine import make_url

    plain = make_url(postgres_url)
    secret = plain.password or "s3cret"  # trust authentication ignores the password
    url = plain.set(password=secret).render_as_string(hide_password=False)
    assert secret in url
    work, study = tmp_path / "work", new_study("secret")
    env = fake_env()

    search = procs.run(
        search_args(url, study, 4, "--workers", "2", data=tiny_data[0]),
        "search",
        cwd=work,
        env=env,
        timeout=240,
    )
    assert search.proc.returncode == 0, search.tail()
    assert f"--storage {plain.drivername}://{plain.username}:***@" in search.stdout()
    with dashboard(procs, url, work) as (board, base):
        listed = http_json(f"{base}/api/studies")["study_summaries"]
        assert study in {s["study_name"] for s in listed}
    report = procs.run(
        ["report", "--study", study, "--storage", url], "report", cwd=work, env=env, timeout=240
    )
    assert report.proc.returncode == 0, report.tail()
    wrong_db = plain.set(password=secret, database="no_such_database")
    refused = procs.run(
        search_args(wrong_db.render_as_string(hide_password=False), study, 4, "--workers", "1"),
        "refused",
        cwd=work,
        env=env,
        timeout=120,
    )
    assert refused.proc.returncode == 1, refused.tail()
    (line,) = error_lines(refused)
    assert "***" in line and "no_such_database" in line

    for run in (search, board, report, refused):
        assert secret not in run.stdout() + run.stderr(), run.tail()
    written = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written)  # artifacts and report figures were written
    assert [p for p in written if secret.encode() in p.read_bytes()] == []
    assert secret not in json.dumps(load(url, study).user_attrs)
    assert _database_rows_holding(postgres_url, secret) == []


# -- e. the prepared data of a study ------------------------------------------------------


@pytest.mark.slow
def test_every_worker_trains_on_the_study_prepared_data_and_other_data_is_refused(
    store: Store, tiny_data: tuple[Path, Path], tmp_path: Path, procs: Processes
) -> None:
    work, study, log = tmp_path / "work", new_study("data"), tmp_path / "fake.jsonl"
    good, other = tiny_data
    env = fake_env(BLOOD_AUTOML_FAKE_LOG=log)

    first = procs.run(
        search_args(store.url, study, 2, "--workers", "1", data=good),
        "first",
        cwd=work,
        env=env,
        timeout=180,
    )
    assert first.proc.returncode == 0, first.tail()
    folder = work / study_dir(store.url, study) / "data"
    prepared = load_prepared(folder)
    assert load(store.url, study).user_attrs["data_fingerprint"] == prepared.fingerprint
    digest = fake_digest(prepared.x_train, prepared.y_train, prepared.x_val, prepared.y_val)

    # Workers started without --data find the study's prepared data and train on it.
    later = procs.run(
        search_args(store.url, study, 4, "--workers", "1"),
        "no-data",
        cwd=work,
        env=env,
        timeout=180,
    )
    assert later.proc.returncode == 0, later.tail()
    assert "the study's prepared data" in later.stdout()
    lines = fake_log(log)
    assert len(lines) == 4 and {line["data"] for line in lines} == {digest}
    assert {line["ppid"] for line in lines} == {first.pid, later.pid}  # trials: a child each

    # Other data for the same study: refused in one line; nothing written, nothing run.
    manifest = (folder / "manifest.json").read_bytes()
    n_trials = len(load(store.url, study).get_trials())
    wrong = procs.run(
        search_args(store.url, study, 6, "--workers", "1", data=other),
        "wrong",
        cwd=work,
        env=env,
        timeout=180,
    )
    assert wrong.proc.returncode == 1, wrong.tail()
    (line,) = error_lines(wrong)
    assert "different data" in line and "fingerprint" in line
    assert (folder / "manifest.json").read_bytes() == manifest
    assert len(load(store.url, study).get_trials()) == n_trials
    assert len(fake_log(log)) == 4
    if store.db is not None:
        return

    # A server storage is shared by machines that each prepare the data in their own
    # folder: the same source gives the same fingerprint and joins; other data is refused
    # by the fingerprint the study holds, leaving no prepared copy of the wrong data.
    elsewhere = tmp_path / "machine-2"
    other_folder = elsewhere / study_dir(store.url, study) / "data"
    refused = procs.run(
        search_args(store.url, study, 6, "--workers", "1", data=other),
        "machine-2-wrong",
        cwd=elsewhere,
        env=env,
        timeout=180,
    )
    assert refused.proc.returncode == 1, refused.tail()
    (line,) = error_lines(refused)
    assert "data_fingerprint" in line and "--data" in line
    assert not other_folder.exists()
    joined = procs.run(
        search_args(store.url, study, 6, "--workers", "1", data=good),
        "machine-2",
        cwd=elsewhere,
        env=env,
        timeout=180,
    )
    assert joined.proc.returncode == 0, joined.tail()
    assert load_prepared(other_folder).fingerprint == prepared.fingerprint
    lines = fake_log(log)
    assert len(lines) == 6 and {line["data"] for line in lines} == {digest}
    assert count_finished(load(store.url, study)) == 6
