"""Trial workers: one process serves many trials, and is replaced when it dies, fails, grows or ages.

The searches run ``run_search`` here with trials isolated (as the CLI runs them) and model
training replaced by ``fake_trainer/fake_blood_trainer.py``, in this process and in the
trial workers it spawns (installed by the ``sitecustomize.py`` beside it), so each trial
takes a fraction of a second. Storage, sampling, the workers and their pipes are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from blood_automl.errors import ConfigError
from blood_automl.search import SearchOptions, isolate, run_search
from blood_automl.search.options import TRIALS_PER_WORKER_ENV, check_options
from blood_automl.search.workers import threads_per_worker
from conftest import make_images

from .test_scale import FAKE_DIR, fake_trainer

IMAGE_SIZE = 32
KILLED = "the trial's process was killed by SIGKILL (the system may have run out of memory)"


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 8-class data set of 32 px images."""
    images, labels = make_images(96, size=IMAGE_SIZE, seed=0)
    path = tmp_path_factory.mktemp("trial-workers") / "cells.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The fake trainer here and in every process spawned from here; the test's folder as cwd."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(FAKE_DIR) + (os.pathsep + path if path else ""))
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_TRAINER", "1")
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_SECONDS", "0.02")
    monkeypatch.delenv(TRIALS_PER_WORKER_ENV, raising=False)
    module = fake_trainer()
    monkeypatch.setitem(sys.modules, "blood_automl.trainer", module)
    monkeypatch.setitem(sys.modules, "tensorflow", module.fake_tensorflow())
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert leftover_workers() == [], "a trial worker outlived its search"


def leftover_workers() -> list[int]:
    """Processes this one spawned (``spawn_main``) that still exist, zombies included."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(entry))
    return found


def search(folder: Path, data: Path, trials: int, **kw: Any) -> list[FrozenTrial]:
    """A smoke search of ``trials`` trials (random sampler, no pruner); its trials by number."""
    url = f"sqlite:///{folder / 'w.db'}"
    options = SearchOptions(
        data=str(data),
        image_size=IMAGE_SIZE,
        trials=trials,
        study="tw",
        storage=url,
        preset="smoke",
        weights="none",
        recipes=False,
        sampler="random",
        pruner="none",
        **kw,
    )
    run_search(options, Console(quiet=True))
    return sorted(optuna.load_study(study_name="tw", storage=url).trials, key=lambda t: t.number)


def pids(trials: list[FrozenTrial]) -> list[int | None]:
    return [t.user_attrs.get("worker_pid") for t in trials]


def served(trials: list[FrozenTrial]) -> list[int | None]:
    return [t.user_attrs.get("worker_trials") for t in trials]


def test_one_worker_serves_consecutive_trials(fake: Path, cells: Path) -> None:
    trials = search(fake, cells, 3)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    first = pids(trials)[0]
    assert first is not None and first != os.getpid()
    assert pids(trials) == [first] * 3
    assert served(trials) == [1, 2, 3]
    rss = [t.user_attrs["worker_rss_mib"] for t in trials]
    assert all(isinstance(r, float) and r > 10 for r in rss), rss
    assert all("train_seconds" in t.user_attrs for t in trials)
    assert all(Path(t.user_attrs["log"]).name == f"trial-{t.number}.log" for t in trials)


def test_a_worker_is_replaced_after_its_trial_limit(
    fake: Path, cells: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRIALS_PER_WORKER_ENV, "2")
    trials = search(fake, cells, 4)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    a, _, b, _ = pids(trials)
    assert pids(trials) == [a, a, b, b] and a != b
    assert served(trials) == [1, 2, 1, 2]


def test_a_worker_is_replaced_after_a_failed_trial(
    fake: Path, cells: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_FAIL_MARKER", str(fake / "fail.json"))
    trials = search(fake, cells, 3)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == (
        "RuntimeError: simulated failure of this configuration"
    )
    failed, b, c = pids(trials)
    assert failed is not None and b == c and b != failed
    assert served(trials) == [1, 1, 2]


def test_a_worker_is_replaced_when_its_memory_grows_past_the_limit(
    fake: Path, cells: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_GROW_MIB", "32")  # each trial leaves 32 MiB behind
    monkeypatch.setattr(isolate, "MAX_RSS_GROWTH_MIB", 48.0)
    trials = search(fake, cells, 4)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    rss = [t.user_attrs["worker_rss_mib"] for t in trials]
    a, _, _, d = pids(trials)
    # After trial 2 the worker is 32 MiB above its size after trial 1, after trial 3 64 MiB.
    assert pids(trials) == [a, a, a, d] and a != d, rss
    assert 28 < rss[1] - rss[0] < 48 and rss[2] - rss[0] > 48, rss
    assert served(trials) == [1, 2, 3, 1]


def _kill_the_hanging_worker(marker: Path, killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not marker.is_file():
        time.sleep(0.1)
    time.sleep(0.3)  # the marker is written whole
    pid = int(json.loads(marker.read_text())["pid"])
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def test_a_worker_killed_mid_trial_fails_it_and_the_next_trial_gets_a_new_worker(
    fake: Path, cells: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = fake / "hang.json"
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_HANG_MARKER", str(marker))  # trial 0 hangs
    killed: list[int] = []
    killer = threading.Thread(target=_kill_the_hanging_worker, args=(marker, killed))
    killer.start()
    try:
        trials = search(fake, cells, 3)
    finally:
        killer.join(130)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == KILLED
    assert "interrupted" not in trials[0].user_attrs
    _, b, c = pids(trials)
    assert killed and b == c and b != killed[0]
    assert served(trials)[1:] == [1, 2]


def test_an_error_while_a_worker_trains_stops_it_and_the_next_trial_gets_a_new_one(
    fake: Path, cells: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blood_automl.search.progress import SearchProgress

    marker = fake / "hang.json"
    monkeypatch.setenv("BLOOD_AUTOML_FAKE_HANG_MARKER", str(marker))  # trial 0 hangs
    poll = SearchProgress.poll
    failures: list[int] = []

    def failing_poll(self: SearchProgress) -> None:
        if marker.is_file() and not failures:
            failures.append(1)
            raise RuntimeError("the display failed")
        poll(self)

    monkeypatch.setattr(SearchProgress, "poll", failing_poll)
    trials = search(fake, cells, 2)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert "interrupted" in trials[0].user_attrs  # the worker was stopped, not killed
    hung = int(json.loads(marker.read_text())["pid"])
    _, b, c = pids(trials)
    assert b == c and b != hung


def test_a_trial_limit_that_is_not_a_whole_number_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TRIALS_PER_WORKER_ENV, "0")
    with pytest.raises(ConfigError, match=f"{TRIALS_PER_WORKER_ENV} must be a whole number"):
        check_options(SearchOptions())


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_worker_threads_count_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    probe = (
        "from blood_automl.search.workers import threads_per_worker; "
        "print(threads_per_worker(1, 0), threads_per_worker(2, 0))"
    )
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    if done.returncode != 0 and "taskset" in done.stderr:
        pytest.skip(f"taskset cannot pin here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]
    assert threads_per_worker(1, 0) == len(os.sched_getaffinity(0))
    assert threads_per_worker(4, 2) is None
