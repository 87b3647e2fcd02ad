"""Stops held while bookkeeping runs: raised where allowed, never lost, never cutting a trial's creation."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from blood_automl import signals
from blood_automl.signals import stop_signals, stops_allowed, stops_held
from blood_automl.studies import StudySettings, create_or_load_study, open_storage
from blood_automl.studies.budget import INTERRUPTED_ATTR, optimize_to_target

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _stop_me() -> None:
    """SIGTERM to this process; returns once the stop is held (or raises it, where allowed).

    The handler may run late: one that lands in a garbage-collection finalizer sends the
    signal again 50 ms later (see signals.raise_on_stop), so this waits for the stop to be
    held rather than a fixed time.
    """
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 10.0
    while signals._HELD.stop is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_held_stop_waits_for_an_allowed_block() -> None:
    reached = []
    with stop_signals(), pytest.raises(KeyboardInterrupt), stops_held():
        _stop_me()
        reached.append("after the signal")  # held: the bookkeeping goes on
        with stops_allowed():
            reached.append("never")
    assert reached == ["after the signal"]


def test_a_held_stop_is_raised_when_the_block_ends() -> None:
    with stop_signals(), pytest.raises(KeyboardInterrupt), stops_held():
        _stop_me()


def test_a_stop_inside_an_allowed_block_is_raised_at_once() -> None:
    reached = []
    with stop_signals(), pytest.raises(KeyboardInterrupt), stops_held(), stops_allowed():
        _stop_me()
        reached.append("never")
    assert reached == []


def test_an_error_leaving_the_block_goes_on_and_the_held_stop_is_dropped() -> None:
    with stop_signals():
        with pytest.raises(ValueError), stops_held():
            _stop_me()
            raise ValueError("the error wins")
        with stops_held(), stops_allowed():
            pass  # nothing held any more
    with stop_signals(), pytest.raises(KeyboardInterrupt):
        _stop_me()  # and stops are raised again outside any held block


class _StopWhileCreating(optuna.samplers.RandomSampler):
    """Sends SIGTERM while Optuna creates trial ``at`` (it is RUNNING, its objective not begun)."""

    def __init__(self, at: int) -> None:
        super().__init__(seed=0)
        self.at = at

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number == self.at:
            _stop_me()


def _study(tmp_path: Path, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = create_or_load_study(storage, "stop", StudySettings())
    study.sampler = sampler
    return study


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def test_a_stop_while_optuna_creates_a_trial_leaves_no_trial_running(tmp_path: Path) -> None:
    study = _study(tmp_path, _StopWhileCreating(at=1))
    with stop_signals(), pytest.raises(KeyboardInterrupt):
        optimize_to_target(study, _objective, target=5)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert INTERRUPTED_ATTR in study.get_trials()[1].user_attrs


def test_a_stop_while_a_trial_is_recorded_ends_the_run_after_it(tmp_path: Path) -> None:
    study = _study(tmp_path, optuna.samplers.RandomSampler(seed=0))

    def stop_after_first(study: optuna.Study, trial: Any) -> None:
        if trial.number == 0:
            _stop_me()  # in a callback: Optuna is still busy with trial 0

    with stop_signals(), pytest.raises(KeyboardInterrupt):
        optimize_to_target(study, _objective, target=5, callbacks=[stop_after_first])
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE]


def test_a_held_block_in_another_thread_leaves_the_main_thread_state_alone() -> None:
    """Trial loops run in threads too (tests, notebooks): their blocks must not interleave."""
    import threading

    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with stops_held():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with stops_held():
        thread.start()
        assert entered.wait(10)
    leave.set()
    thread.join(10)
    assert signals._HELD.active is False  # the main thread's block ended: nothing held
