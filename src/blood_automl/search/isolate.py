"""Trials in another process: the sampler runs here, training in a trial worker replaced as needed.

TensorFlow keeps memory from every model a process builds (graphs, kernels, allocator pools;
about 80-180 MiB per small trial here, even after ``clear_session``), and never gives GPU
memory back; a configuration that fails may leave it in a bad state. So trials train in a
spawned trial worker (:mod:`blood_automl.search.trial_worker`), which reports epochs and
results straight to the study's storage, while this process keeps the study's sampler,
heartbeat and the Optuna bookkeeping. The worker serves trial after trial (TensorFlow, the
study and the data stay loaded) and is replaced by a fresh one when it dies, after a
trial that failed or met an environment error, when its memory has grown more than
:data:`MAX_RSS_GROWTH_MIB` past its size after its first trial, and after
:data:`MAX_TRIALS_PER_WORKER` trials.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import optuna

from blood_automl.search.objective import (
    FAIL_REASON,
    Interrupted,
    SearchContext,
    environment_guard,
    mark_interrupted,
    start_trial,
    stop_trial,
)
from blood_automl.search.options import MAX_TRIALS_PER_WORKER, trials_per_worker
from blood_automl.search.trial_worker import Outcome, TrialJob, serve
from blood_automl.studies.optuna_private import trial_id
from blood_automl.studies.records import WorkerRecord

__all__ = [
    "MAX_RSS_GROWTH_MIB",
    "MAX_TRIALS_PER_WORKER",
    "TrialJob",
    "TrialWorkers",
    "WorkerLimits",
    "isolated_objective",
]

MAX_RSS_GROWTH_MIB = 512.0
"""MiB a trial worker's resident memory may grow past its size after its first trial.

TensorFlow keeps about 50 MiB per trial of the smoke space on a CPU (400 images; up to
230 MiB for larger trials), so a worker there serves about 12 trials between fresh starts
(bench/overhead.py) and never holds more than half a GiB above its first size; a worker
that keeps less serves up to :data:`MAX_TRIALS_PER_WORKER` trials.
"""

_GRACE = 120.0  # seconds a stopped worker gets to record its trial as interrupted
_EXIT_WAIT = 30.0  # seconds a retired worker gets to end on its own before it is killed


@dataclass(frozen=True)
class WorkerLimits:
    """When a trial worker is replaced: after ``trials`` trials, or ``rss_growth_mib`` of growth."""

    trials: int = MAX_TRIALS_PER_WORKER
    rss_growth_mib: float = MAX_RSS_GROWTH_MIB

    @classmethod
    def from_env(cls) -> WorkerLimits:
        """The defaults, with ``$BLOOD_AUTOML_TRIALS_PER_WORKER`` as the trial limit if set."""
        return cls(trials=trials_per_worker(), rss_growth_mib=MAX_RSS_GROWTH_MIB)


@dataclass
class _Worker:
    """A live trial worker, its end of the pipe, and what it reported so far."""

    process: BaseProcess
    conn: Connection
    first_rss: float | None = None
    busy: bool = False  # a job was sent and not answered yet


class TrialWorkers:
    """This process's trial worker: started when a trial needs it, replaced by the rules above.

    :meth:`run` trains one job and returns the worker's :class:`Outcome`, or, when the
    worker died before answering, the reason (a string). :meth:`close` ends and reaps
    every worker it started; use the object as a context manager.
    """

    def __init__(
        self, limits: WorkerLimits | None = None, on_wait: Callable[[], None] | None = None
    ) -> None:
        self.limits = limits or WorkerLimits()
        self.on_wait = on_wait
        self._spawn = mp.get_context("spawn")
        self._worker: _Worker | None = None
        self._retired: list[BaseProcess] = []

    def __enter__(self) -> TrialWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, job: TrialJob, name: str = "trial-worker") -> Outcome | str:
        """Train ``job`` in the worker; its outcome, or why the worker died without one.

        On KeyboardInterrupt (SIGINT, SIGTERM), or any error while waiting, the worker is
        stopped (SIGTERM, then up to two minutes to record its trial as interrupted) and
        the exception re-raised: the next trial gets a fresh worker.
        """
        worker = self._ready(name)
        try:
            worker.busy = True
            with contextlib.suppress(OSError):  # a dead worker: found below
                worker.conn.send(job)
            outcome = self._wait(worker)
            worker.busy = False
        except BaseException:
            self._worker = None
            _stop(worker.process)
            worker.conn.close()
            raise
        if outcome is None:
            self._worker = None
            return self._reason(worker)
        if worker.first_rss is None:
            worker.first_rss = outcome.rss_mib
        if self._spent(worker, outcome):
            self._retire()
        return outcome

    def close(self) -> None:
        """End the current worker and wait for every retired one; kill those that hang.

        A worker still training (the search ended on an error while it waited) is stopped
        like an interrupted one: its trial is recorded as interrupted.
        """
        worker = self._worker
        if worker is not None and worker.busy:
            self._worker = None
            _stop(worker.process)
            worker.conn.close()
        self._retire()
        for process in self._retired:
            if process.pid is None:
                continue  # never started
            process.join(_EXIT_WAIT)
            if process.is_alive():
                process.kill()
                process.join(5)
        self._retired.clear()

    def _ready(self, name: str) -> _Worker:
        """The live worker, or a fresh one (after reaping the retired ones that ended)."""
        if self._worker is not None and not self._worker.process.is_alive():
            self._worker.conn.close()
            self._worker = None
        if self._worker is None:
            self._reap()
            here, there = self._spawn.Pipe(duplex=True)
            process = self._spawn.Process(target=serve, args=(there,), name=name)
            self._worker = _Worker(process, here)  # known before it starts: close() ends it
            process.start()
            there.close()
        return self._worker

    def _wait(self, worker: _Worker) -> Outcome | None:
        while worker.process.is_alive() and not worker.conn.poll(1.0):
            if self.on_wait is not None:
                self.on_wait()
        return _receive(worker.conn)

    def _reason(self, worker: _Worker) -> str:
        worker.process.join(_EXIT_WAIT)
        if worker.process.is_alive():  # it closed its pipe but lives on: end it
            _stop(worker.process)
        worker.conn.close()
        return _died(worker.process.exitcode)

    def _spent(self, worker: _Worker, outcome: Outcome) -> bool:
        """True when the worker must not serve another trial."""
        if outcome.kind in ("failed", "environment", "interrupted"):
            return True
        if outcome.served >= self.limits.trials:
            return True
        grown = outcome.rss_mib - (worker.first_rss or outcome.rss_mib)
        return grown > self.limits.rss_growth_mib

    def _retire(self) -> None:
        """Ask the current worker to end (it finishes on its own); it is joined later."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(OSError):
            worker.conn.send(None)
        worker.conn.close()
        self._retired.append(worker.process)

    def _reap(self) -> None:
        """Join the retired workers that ended, so none stays a zombie."""
        for process in list(self._retired):
            process.join(0)
            if not process.is_alive():
                self._retired.remove(process)


def _record_worker(trial: optuna.Trial, outcome: Outcome) -> None:
    """Store which worker trained the trial, how many trials it had served, its memory after
    it, and the seconds it spent on the trial (training, figures, storage)."""
    record = WorkerRecord(
        pid=outcome.pid,
        trials=outcome.served,
        rss_mib=round(outcome.rss_mib, 1),
        seconds=round(outcome.seconds, 2),
    )
    with contextlib.suppress(Exception):  # diagnostics: a failing store shows up elsewhere
        for key, value in record.to_user_attrs().items():
            trial.set_user_attr(key, value)


def _job(
    trial: optuna.Trial,
    ctx: SearchContext,
    storage_url: str | None,
    study_name: str,
    data_dir: Path,
    threads: int | None,
) -> TrialJob:
    """Suggest the trial's configuration here and package what the worker needs to train it."""
    config, seed = start_trial(trial, ctx)
    return TrialJob(
        storage_url=storage_url,
        study=study_name,
        trial_id=trial_id(trial),
        config=config.to_dict(),
        seed=seed,
        space=ctx.space.to_dict(),
        data_dir=str(data_dir),
        weights=ctx.weights,
        objective=ctx.objective,
        patience=ctx.patience,
        threads=threads,
    )


def _result(trial: optuna.Trial, outcome: Outcome | str) -> float:
    """The trial's value, or the exception that ends it as today's trial processes did."""
    if isinstance(outcome, str):
        trial.set_user_attr(FAIL_REASON, outcome)
        raise RuntimeError(outcome)
    _record_worker(trial, outcome)
    kind, detail = outcome.kind, outcome.detail
    if kind == "value":
        return float(detail)
    if kind == "pruned":
        raise optuna.TrialPruned(detail)
    if kind == "interrupted":
        raise Interrupted()
    if kind == "environment":
        raise stop_trial(trial, str(detail))
    raise RuntimeError(detail)


@contextlib.contextmanager
def isolated_objective(
    ctx: SearchContext,
    *,
    storage_url: str | None,
    study_name: str,
    data_dir: Path,
    threads: int | None = None,
    on_wait: Callable[[], None] | None = None,
    limits: WorkerLimits | None = None,
) -> Iterator[Callable[[optuna.Trial], float]]:
    """The objective of a search whose trials train in trial workers, for the block's length.

    When the block ends (the search finished, failed or was stopped) the worker is ended
    and reaped: no process is left behind.
    """
    with TrialWorkers(limits or WorkerLimits.from_env(), on_wait) as workers:

        def objective(trial: optuna.Trial) -> float:
            job = _job(trial, ctx, storage_url, study_name, data_dir, threads)
            try:
                outcome = workers.run(job, name=f"trial-worker-{trial.number}")
            except KeyboardInterrupt:
                mark_interrupted(trial)
                raise Interrupted() from None
            return _result(trial, outcome)

        yield environment_guard(objective)


def _receive(receive: Connection) -> Any | None:
    """The worker's message, or None when it died without sending one.

    A pipe whose writer died polls as readable (end of file), so ``recv`` raises
    ``EOFError`` then: that is a dead worker, not a message.
    """
    try:
        return receive.recv() if receive.poll(0) else None
    except (EOFError, OSError):
        return None


def _died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the trial's process was killed by {name}{hint}"
    return f"the trial's process ended with exit code {exitcode} before reporting a result"


def _stop(child: BaseProcess) -> None:
    if child.is_alive() and child.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
    child.join(_GRACE)
    if child.is_alive():
        child.kill()
        child.join(5)
