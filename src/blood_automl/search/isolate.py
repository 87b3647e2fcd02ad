"""Trials in their own process: the sampler runs here, training in a child that exits afterwards.

TensorFlow keeps memory from every model a process builds (graphs, kernels, allocator pools;
about 80-180 MiB per small trial here, even after ``clear_session``), and never gives GPU
memory back. A search of hundreds of trials therefore trains each one in a fresh spawned
process, which reports epochs and results straight to the study's storage; the parent keeps
the study's sampler, heartbeat and the Optuna bookkeeping.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from blood_automl.errors import StorageError
from blood_automl.search.faults import classify
from blood_automl.search.objective import (
    FAIL_REASON,
    Interrupted,
    SearchContext,
    environment_guard,
    mark_interrupted,
    one_line,
    start_trial,
    stop_trial,
    train_trial,
)
from blood_automl.spaces import TrialConfig

_GRACE = 120.0  # seconds a stopped child gets to record its trial as interrupted


@dataclass(frozen=True)
class TrialJob:
    """Everything a child process needs to train one trial (plain, picklable data)."""

    storage_url: str | None
    study: str
    trial_id: int
    config: dict[str, Any]
    seed: int
    space: dict[str, Any]
    data_dir: str
    weights: str
    objective: str
    patience: int | None
    threads: int | None


def _die_with_parent() -> None:
    # Linux: SIGKILL this child when the parent dies, so an orphan never trains on. Not
    # SIGTERM: that would record the trial as interrupted by the user (not counted, and
    # inherited by its re-run), while a dead worker's trial is failed by its stale
    # heartbeat and re-run with the same parameters. A stop asked for by the user reaches
    # the child as SIGTERM from the living parent (see _stop) or SIGINT from the terminal.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(job: TrialJob, conn: Any) -> None:
    _die_with_parent()
    # Before TensorFlow is imported: its logging (fd 2, below Python) and anything else the
    # trial prints goes to studies/<study>/logs/trial-<number>.log, never to the terminal.
    from blood_automl.search.quiet import log_trial_output

    log_trial_output(job.storage_url, job.study, job.trial_id)
    from blood_automl.search.run import stop_signals

    try:
        with stop_signals():
            conn.send(_train(job))
    except KeyboardInterrupt:
        conn.send(("interrupted", ""))


def _train(job: TrialJob) -> tuple[str, Any]:
    """Train the job's trial; the outcome: a value, pruned, interrupted, failed or environment.

    ``environment`` (the disk, the store, the weights or the data failed; see
    :func:`~blood_automl.search.faults.classify`) stops the search in the parent, while
    ``failed`` (the configuration could not train) fails only this trial.
    """
    try:
        return _run_job(job)
    except optuna.TrialPruned as exc:
        return ("pruned", str(exc))
    except Interrupted:
        return ("interrupted", "")
    except Exception as exc:
        kind = "environment" if classify(exc) == "environment" else "failed"
        return (kind, one_line(exc))


def _run_job(job: TrialJob) -> tuple[str, Any]:
    from blood_automl.data import load_prepared
    from blood_automl.spaces import Space
    from blood_automl.studies import (
        artifact_store_for,
        make_pruner,
        open_storage,
        settings_of,
    )
    from blood_automl.trainer import configure

    configure(threads=job.threads)
    try:
        storage = open_storage(job.storage_url, heartbeat=False)
        study = optuna.load_study(
            study_name=job.study, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
        study.pruner = make_pruner(settings_of(study))
        trial = optuna.Trial(study, job.trial_id)
    except Exception as exc:  # the store is not one every process can open: not the trial
        raise StorageError(
            f"the trial's process cannot open study '{job.study}' in its store ({one_line(exc)})"
        ) from exc
    artifact_store, artifact_error = None, None
    try:
        artifact_store = artifact_store_for(job.storage_url, job.study)
    except StorageError as exc:
        artifact_error = str(exc)
    ctx = SearchContext(
        space=Space.from_dict(job.space, source=f"study '{job.study}'"),
        data=load_prepared(Path(job.data_dir), verify="quick"),
        weights=job.weights,
        objective=job.objective,
        patience=job.patience,
        artifact_store=artifact_store,
        artifact_error=artifact_error,
    )
    value = train_trial(trial, TrialConfig.from_dict(job.config), job.seed, ctx)
    return ("value", value)


def make_isolated_objective(
    ctx: SearchContext,
    *,
    storage_url: str | None,
    study_name: str,
    data_dir: Path,
    threads: int | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Callable[[optuna.Trial], float]:
    """The objective of a search that trains each trial in a fresh child process."""
    spawn = mp.get_context("spawn")

    def objective(trial: optuna.Trial) -> float:
        config, seed = start_trial(trial, ctx)
        job = TrialJob(
            storage_url=storage_url,
            study=study_name,
            trial_id=trial._trial_id,
            config=config.to_dict(),
            seed=seed,
            space=ctx.space.to_dict(),
            data_dir=str(data_dir),
            weights=ctx.weights,
            objective=ctx.objective,
            patience=ctx.patience,
            threads=threads,
        )
        receive, send = spawn.Pipe(duplex=False)
        child = spawn.Process(target=_child, args=(job, send), name=f"trial-{trial.number}")
        child.start()
        send.close()
        try:
            while child.is_alive() and not receive.poll(1.0):
                if on_wait is not None:
                    on_wait()
            outcome = _receive(receive)
            child.join(30)
        except KeyboardInterrupt:
            _stop(child)
            mark_interrupted(trial)
            raise Interrupted() from None
        finally:
            if child.is_alive():
                _stop(child)
            receive.close()
        if outcome is None:
            reason = _died(child.exitcode)
            trial.set_user_attr(FAIL_REASON, reason)
            raise RuntimeError(reason)
        kind, detail = outcome
        if kind == "value":
            return float(detail)
        if kind == "pruned":
            raise optuna.TrialPruned(detail)
        if kind == "interrupted":
            raise Interrupted()
        if kind == "environment":
            raise stop_trial(trial, str(detail))
        raise RuntimeError(detail)

    return environment_guard(objective)


def _receive(receive: Any) -> tuple[str, Any] | None:
    """The child's outcome, or None when it died without sending one.

    A pipe whose writer died polls as readable (end of file), so ``recv`` raises
    ``EOFError`` then: that is a dead child, not a message.
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


def _stop(child: Any) -> None:
    if child.is_alive() and child.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
    child.join(_GRACE)
    if child.is_alive():
        child.kill()
        child.join(5)
