"""The trial worker: a process that trains one trial after another for a search's main process.

It keeps what every trial would otherwise load again (TensorFlow, the opened study, the
prepared data), so a trial costs little more than its training. Per trial it points its
file descriptors 1 and 2 at the trial's log, trains, frees the trial's models
(``trainer.release()``) and answers with an :class:`Outcome` that carries its resident
memory; the main process (:mod:`blood_automl.search.isolate`) decides when to replace it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from blood_automl.data import PreparedData
from blood_automl.errors import StorageError
from blood_automl.search.faults import classify
from blood_automl.search.objective import Interrupted, SearchContext, one_line, train_trial
from blood_automl.spaces import TrialConfig
from blood_automl.studies.optuna_private import trial_from_id


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial worker needs to train one trial (plain, picklable data)."""

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


@dataclass(frozen=True)
class Outcome:
    """A trial worker's answer: how the trial ended, and the worker's state after it.

    ``kind`` is ``value``, ``pruned``, ``interrupted``, ``failed`` or ``environment``;
    ``detail`` the value or the reason.
    """

    kind: str
    detail: Any
    rss_mib: float  # the worker's resident memory after the trial
    served: int  # trials this worker has served, this one included
    pid: int
    seconds: float = 0.0  # from the job's arrival to this answer


def rss_mib() -> float:
    """This process's resident memory (VmRSS) in MiB; 0.0 where /proc cannot tell."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def die_with_parent() -> None:
    """Linux: have this process SIGKILLed when its parent dies, so an orphan never trains on.

    Not SIGTERM: that would record the trial as interrupted by the user (not counted, and
    inherited by its re-run), while a dead worker's trial is failed by its stale heartbeat
    and re-run with the same parameters. A stop asked for by the user reaches the trial
    worker as SIGTERM from the living parent or SIGINT from the terminal.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Cache:
    """What a trial worker keeps between trials: studies by (storage URL, name), data by folder."""

    storages: dict[str | None, BaseStorage] = field(default_factory=dict)
    studies: dict[tuple[str | None, str], optuna.Study] = field(default_factory=dict)
    data: dict[str, PreparedData] = field(default_factory=dict)
    artifacts: dict[tuple[str | None, str], tuple[Any, str | None]] = field(default_factory=dict)
    configured: bool = False


def serve(conn: Connection) -> None:
    """The trial worker's main loop: receive a :class:`TrialJob`, answer an :class:`Outcome`.

    ``None`` ends the loop. A stop signal (SIGINT, SIGTERM) interrupts the running trial,
    which is recorded as interrupted and answered so; the worker then ends, since later
    signals are ignored (see :func:`~blood_automl.signals.stop_signals`).
    """
    die_with_parent()
    from blood_automl.signals import stop_signals

    cache, served, training = _Cache(), 0, False
    try:
        with stop_signals():
            while (job := conn.recv()) is not None:
                served, started, training = served + 1, time.monotonic(), True
                kind, detail = _serve_one(job, cache)
                seconds = time.monotonic() - started
                conn.send(Outcome(kind, detail, rss_mib(), served, os.getpid(), seconds))
                training = False
                if kind == "interrupted":
                    return
                _release()
    except KeyboardInterrupt:
        if training:  # a stop between trials has no trial to answer for
            with contextlib.suppress(Exception):
                conn.send(Outcome("interrupted", "", rss_mib(), served, os.getpid()))
    except (EOFError, OSError):
        pass  # the main process is gone or closed the pipe: nothing more to do


def _serve_one(job: TrialJob, cache: _Cache) -> tuple[str, Any]:
    """Point the output at the trial's log (before TensorFlow is imported), then train."""
    from blood_automl.search.logs import log_trial_output

    storage = None
    with contextlib.suppress(Exception):  # the trial itself fails on the store and says why
        storage = _storage(job.storage_url, cache)
    log_trial_output(job.storage_url, job.study, job.trial_id, storage=storage)
    return train_job(job, cache)


def _release() -> None:
    """Free the last trial's models and graphs, then set what survives aside for the collector.

    ``trainer.release()`` collects garbage (twice: ``clear_session`` does too), and a full
    collection walks every object of TensorFlow and Keras: about 0.85 s each here, per
    trial. What is still alive after a trial (modules, caches, the study and data kept
    here) lives as long as the worker, so it is frozen (:func:`gc.freeze`): later
    collections walk only what the next trial makes. Objects are still freed when their
    last reference goes; only cycles among the frozen ones are left to the worker's end.
    """
    if "blood_automl.trainer" in sys.modules:
        from blood_automl import trainer

        trainer.release()
    gc.freeze()


def train_job(job: TrialJob, cache: _Cache | None = None) -> tuple[str, Any]:
    """Train the job's trial; the outcome: a value, pruned, interrupted, failed or environment.

    ``environment`` (the disk, the store, the weights or the data failed; see
    :func:`~blood_automl.search.faults.classify`) stops the search in the parent, while
    ``failed`` (the configuration could not train) fails only this trial.
    """
    try:
        return _run_job(job, cache or _Cache())
    except optuna.TrialPruned as exc:
        return ("pruned", str(exc))
    except Interrupted:
        return ("interrupted", "")
    except Exception as exc:
        kind = "environment" if classify(exc) == "environment" else "failed"
        return (kind, one_line(exc))


def _run_job(job: TrialJob, cache: _Cache) -> tuple[str, Any]:
    from blood_automl.spaces import Space

    if not cache.configured:
        from blood_automl.trainer import configure

        configure(threads=job.threads)
        cache.configured = True
        gc.freeze()  # TensorFlow and Keras, just imported: no collection needs to walk them
    study = _study(job, cache)
    trial = trial_from_id(study, job.trial_id)
    artifact_store, artifact_error = _artifacts(job, cache)
    ctx = SearchContext(
        space=Space.from_dict(job.space, source=f"study '{job.study}'"),
        data=_data(Path(job.data_dir), cache),
        weights=job.weights,
        objective=job.objective,
        patience=job.patience,
        artifact_store=artifact_store,
        artifact_error=artifact_error,
    )
    value = train_trial(trial, TrialConfig.from_dict(job.config), job.seed, ctx)
    return ("value", value)


def _study(job: TrialJob, cache: _Cache) -> optuna.Study:
    """The job's study with its pruner, opened once per storage URL and study name."""
    key = (job.storage_url, job.study)
    if key not in cache.studies:
        from blood_automl.studies import make_pruner, settings_of

        try:
            study = optuna.load_study(
                study_name=job.study,
                storage=_storage(job.storage_url, cache),
                sampler=optuna.samplers.RandomSampler(),
            )
            study.pruner = make_pruner(settings_of(study))
        except Exception as exc:  # the store is not one every process can open: not the trial
            raise StorageError(
                f"the trial's process cannot open study '{job.study}' in its store "
                f"({one_line(exc)})"
            ) from exc
        cache.studies[key] = study
    return cache.studies[key]


def _storage(url: str | None, cache: _Cache) -> BaseStorage:
    """The storage at ``url``, opened once (no heartbeat: the main process records it)."""
    if url not in cache.storages:
        from blood_automl.studies import open_storage

        cache.storages[url] = open_storage(url, heartbeat=False)
    return cache.storages[url]


def _artifacts(job: TrialJob, cache: _Cache) -> tuple[Any, str | None]:
    """The study's artifact store (or why there is none), made once per study."""
    key = (job.storage_url, job.study)
    if key not in cache.artifacts:
        from blood_automl.studies import artifact_store_for

        try:
            cache.artifacts[key] = (artifact_store_for(job.storage_url, job.study), None)
        except StorageError as exc:
            cache.artifacts[key] = (None, str(exc))
    return cache.artifacts[key]


def _data(folder: Path, cache: _Cache) -> PreparedData:
    """The prepared data of ``folder``, kept between trials, its files checked before each one.

    The quick check (each file's size and CRC-32 against the manifest, about 13 ms for the
    2,400 real images; see bench/verify.py) runs before every trial, not only at the first
    load: a worker serves a search for hours, and a prepared file changed meanwhile must
    be refused rather than trained on (or, truncated under its memory map, kill the
    worker). The check is a load, since the arrays are memory-mapped (mapping them costs
    well under a millisecond); the first load's arrays are kept while the fingerprint stays.
    """
    from blood_automl.data import load_prepared

    fresh = load_prepared(folder, verify="quick")
    kept = cache.data.get(str(folder))
    if kept is not None and kept.fingerprint == fresh.fingerprint:
        return kept
    cache.data[str(folder)] = fresh
    return fresh
