"""``--trials N``: a study ends with exactly N finished trials, however many workers run it.

Optuna numbers a study's trials 0, 1, 2... in the order the storage creates them, inside
one transaction. That order decides who runs: a trial runs only if fewer than N trials
with smaller numbers are finished, running or waiting; otherwise it is a *surplus* trial
that stops before sampling anything (state PRUNED, user attribute ``surplus``) and counts
for nothing. Whatever the timing between workers, the trials that run are the first N in
that order, so N is never overshot; a worker goes on while fewer than N are finished or
running, and waits while others run, to re-run their trial if their process dies.

A trial failed by the heartbeat (its worker died) and re-run by Optuna's
``RetryHeartbeatStaleTrialCallback`` is *superseded* by the re-run and not counted either.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from blood_automl.errors import ConfigError
from blood_automl.signals import stops_allowed, stops_held
from blood_automl.studies import optuna_private as private
from blood_automl.studies.dashboard_notes import read_note, write_note
from blood_automl.studies.records import INTERRUPTED_ATTR, SURPLUS_ATTR

UNCLAIMED_GRACE = 60.0
"""Seconds after its start when a RUNNING trial that never had a heartbeat is failed."""

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)

Callback = Callable[[optuna.Study, FrozenTrial], None]


class SurplusTrial(optuna.TrialPruned):
    """Raised by :func:`claim_slot` for a trial beyond the target; it ends PRUNED, uncounted."""


def superseded(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of heartbeat-failed trials that Optuna queued again (their re-run counts)."""
    numbers: set[int] = set()
    for t in trials:
        numbers.update(private.retried_numbers(t))
    return numbers


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards a target: all but surplus, superseded and interrupted ones."""
    skip = superseded(trials)
    return [
        t
        for t in trials
        if t.number not in skip
        and SURPLUS_ATTR not in t.user_attrs
        and INTERRUPTED_ATTR not in t.user_attrs
    ]


def count_finished(study: optuna.Study) -> int:
    """Finished trials (COMPLETE, PRUNED or FAIL) that count: surplus and superseded excluded."""
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in FINISHED for t in counted(trials))


def remaining_trials(study: optuna.Study, target: int) -> int:
    """How many more trials a worker may start so the study ends with ``target`` finished.

    Trials running in other workers count as taken; queued (WAITING) trials do not, since
    they are run within the remaining ones.
    """
    _check_target(target)
    trials = study.get_trials(deepcopy=False)
    taken = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in counted(trials))
    return max(0, target - taken)


def claim_slot(trial: optuna.Trial, target: int) -> None:
    """Let ``trial`` run only if it is among the study's first ``target`` counted trials.

    Call it first thing in the objective, before any ``suggest_*``. A surplus trial gets
    the ``surplus`` user attribute and :class:`SurplusTrial` is raised (Optuna marks it
    PRUNED); if it came from the queue (an enqueued or re-run trial), it is queued again.
    """
    _check_target(target)
    study = trial.study
    trials = study.get_trials(deepcopy=False)
    ahead = sum(t.number < trial.number and t.state in _CLAIMED for t in counted(trials))
    if ahead < target:
        _first_heartbeat(study, trial)
        return
    message = f"not run: the study already has its {target} trials"
    mine = next((t for t in trials if t.number == trial.number), None)
    if mine is not None and (mine.params or private.was_queued(mine)):
        _queue_again(study, mine)
        message += "; its parameters are queued again for a later run"
    trial.set_user_attr(SURPLUS_ATTR, message)
    raise SurplusTrial(message)


def _first_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record the trial's first heartbeat now, before the objective does any work.

    Optuna records it from a thread started with the trial; a worker killed before that
    thread's first write leaves a RUNNING trial with no heartbeat, which Optuna never
    marks stale, and which would hold one of the N slots for ever.
    """
    private.record_heartbeat(private.storage_of(study), private.trial_id(trial))


def _queue_again(study: optuna.Study, trial: FrozenTrial) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=copy.deepcopy(trial.params),
                distributions=copy.deepcopy(trial.distributions),
                user_attrs={k: v for k, v in trial.user_attrs.items() if k != SURPLUS_ATTR},
                system_attrs=copy.deepcopy(trial.system_attrs),
            )
        )


class StopAtTarget:
    """Optuna callback: stop this worker once ``target`` trials are finished or running."""

    def __init__(self, target: int) -> None:
        _check_target(target)
        self.target = target
        self.fired = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if remaining_trials(study, self.target) <= 0:
            self.fired = True
            study.stop()


def optimize_to_target(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    *,
    timeout: float | None = None,
    catch: tuple[type[Exception], ...] = (),
    callbacks: Sequence[Callback] = (),
    gc_after_trial: bool = False,
    wait_for_others: bool = True,
    poll_interval: float | None = None,
) -> int:
    """Run ``objective`` in this worker until the study has ``target`` finished trials.

    Several workers (threads, processes, machines) may call it on the same study: together
    they finish exactly ``target`` trials. With ``wait_for_others`` a worker with nothing
    left to start waits while trials run elsewhere, failing and re-running (same params)
    the trial of a worker that died, once the storage's heartbeat grace period has passed.
    Returns when the target is reached, ``timeout`` seconds have passed, or a callback
    called ``study.stop()``; returns the number of trials this call ran (surplus excluded).
    """
    _check_target(target)
    start = time.monotonic()
    ran = 0

    def gated(trial: optuna.Trial) -> float:
        nonlocal ran
        try:
            with stops_allowed():  # a stop held while Optuna made this trial is raised here
                claim_slot(trial, target)
                ran += 1
                return objective(trial)
        except KeyboardInterrupt:
            # SIGINT or SIGTERM (a KeyboardInterrupt, see signals.stop_signals) may land
            # anywhere in the trial, not only where the objective expects it (while it
            # trains): in sampling, storing notes or figures. Optuna records the trial FAIL
            # either way; marked, it is not counted, so a resumed study still runs N trials.
            if INTERRUPTED_ATTR not in trial.user_attrs:
                trial.set_user_attr(INTERRUPTED_ATTR, "stopped by SIGINT or SIGTERM")
            note_interrupted(trial)
            raise

    poll = poll_interval if poll_interval is not None else _poll_interval(study)
    # A stop (SIGINT, SIGTERM) is raised only inside a trial's objective, after a trial is
    # recorded, or while waiting; one that comes while Optuna creates or records a trial
    # waits for the next of those, so no trial is left RUNNING by a clean stop.
    with stops_held():
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                return ran
            _fail_stale(study)
            if remaining_trials(study, target) > 0:
                stop = StopAtTarget(target)
                study.optimize(
                    gated,
                    timeout=left,
                    catch=catch,
                    callbacks=[*callbacks, stop, _raise_a_held_stop],
                    gc_after_trial=gc_after_trial,
                )
                timed_out = timeout is not None and time.monotonic() - start >= timeout
                if not stop.fired and not timed_out:
                    return ran  # another callback stopped the study
                continue
            if not wait_for_others or count_finished(study) >= target:
                return ran
            with stops_allowed():
                time.sleep(poll if left is None else max(0.0, min(poll, left)))


def _raise_a_held_stop(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback, the last: a stop held while the trial was recorded is raised here."""
    with stops_allowed():
        pass


INTERRUPTED_NOTE = (
    "**Interrupted** by SIGINT or SIGTERM: this run of the trial stopped before it ended, "
    "so it is not counted towards `--trials` (its state shows FAIL)."
)
"""The line put first in an interrupted trial's note, which the dashboard shows."""


def note_interrupted(trial: optuna.Trial) -> None:
    """Put :data:`INTERRUPTED_NOTE` first in the trial's dashboard note (kept if that fails)."""
    try:
        body = read_note(trial)
        if not body.startswith(INTERRUPTED_NOTE):
            write_note(trial, f"{INTERRUPTED_NOTE}\n\n{body}" if body else INTERRUPTED_NOTE)
    except Exception:  # the note is a courtesy: the stop must go on whatever happens here
        return


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    _fail_unclaimed(study)


def _fail_unclaimed(study: optuna.Study) -> None:
    """Fail, as interrupted, RUNNING trials that never had a heartbeat, long after their start.

    Optuna creates a trial (RUNNING) and samples it before the objective runs, and only
    then does :func:`claim_slot` record its first heartbeat. A worker stopped or killed in
    between (SIGINT during sampling, say) leaves a RUNNING trial with no heartbeat, which
    Optuna's stale check never sees: it would hold one of the N slots for ever, and every
    resume would wait on it. Such a trial did no work: marked interrupted it is not counted
    (queued parameters are queued again), so its slot is run. The wait, the longer of the
    heartbeat grace period and :data:`UNCLAIMED_GRACE`, leaves a live worker time to sample
    and covers clock differences between machines (start times are their clocks).
    """
    storage = private.storage_of(study)
    backend = private.rdb_backend(storage)
    if backend is None:
        return
    interval = private.heartbeat_interval(backend)
    if not interval:
        return
    grace = max(float(private.grace_period(backend) or 2 * interval), UNCLAIMED_GRACE)
    now = datetime.datetime.now()  # Optuna's datetime_start: the creating machine's local time
    old = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace
    ]
    if not old:
        return
    beating = private.trials_with_heartbeat(backend, (private.trial_id(t) for t in old))
    for t in old:
        tid = private.trial_id(t)
        if tid in beating:
            continue
        with contextlib.suppress(UpdateFinishedTrialError):  # another worker was quicker
            storage.set_trial_user_attr(tid, INTERRUPTED_ATTR, "stopped before it ran")
            storage.set_trial_state_values(tid, TrialState.FAIL)
            if private.was_queued(t):
                _queue_again(study, t)


def _poll_interval(study: optuna.Study) -> float:
    interval = private.heartbeat_interval(private.storage_of(study))
    return float(min(interval, 5)) if interval else 1.0


def _check_target(target: int) -> None:
    if not isinstance(target, int) or isinstance(target, bool) or target < 0:
        raise ConfigError(f"the number of trials must be a whole number >= 0, but got {target!r}")
