"""What fails a trial and what stops a search: a configuration that cannot train, or a broken environment.

A trial fails when its configuration cannot train (NaN loss, out of memory, a layer that
refuses its input): that says something about the parameters, so the trial is recorded FAIL,
counts towards ``--trials``, and the search goes on. When the disk, the study's store, the
weights or the prepared data fail instead, no configuration would have done better: the
search stops with one line naming the cause, and the trial it was running is marked like an
interrupted one, so it is not counted and its slot is run again on resume.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from optuna.exceptions import StorageInternalError

from blood_automl.errors import BloodAutoMLError, ConfigError, WeightsFileError

Kind = Literal["environment", "trial"]

STOPPED_PREFIX = "stopped by an environment error: "
"""How the ``interrupted`` attribute of a trial stopped by :class:`EnvironmentStop` begins."""


class EnvironmentStop(KeyboardInterrupt):
    """The search must stop: the environment (disk, store, weights, data) failed, not the trial.

    Like a stop asked for by the user (a :class:`KeyboardInterrupt`), it passes through
    Optuna's ``catch``, so the trial is not recorded as an ordinary failure, and leaves the
    study consistent; the search turns it into one error line and exit code 1.
    """

    def __init__(self, reason: str, trial: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.trial = trial


def _environment_type(exc: BaseException) -> bool:
    if isinstance(exc, WeightsFileError):
        return True
    if isinstance(exc, BloodAutoMLError):
        return not isinstance(exc, ConfigError)  # DataError, StorageError
    if isinstance(exc, OSError | sqlite3.Error | StorageInternalError):
        return True
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        return False
    return isinstance(exc, SQLAlchemyError)


def classify(exc: BaseException) -> Kind:
    """``environment`` when ``exc`` (or an error it was raised from) is a disk, store,
    weights or data problem; ``trial`` when the trial's configuration could not train.

    Environment errors: :class:`OSError` (read-only file system, disk full, permission
    denied, I/O error, an unreadable weights file), SQLite and SQLAlchemy errors, Optuna's
    :class:`~optuna.exceptions.StorageInternalError`, :class:`WeightsFileError`, and the
    package's :class:`~blood_automl.errors.DataError` and
    :class:`~blood_automl.errors.StorageError`. Anything else (``MemoryError``, a NaN loss,
    TensorFlow's out-of-memory error, a layer's ``ValueError``) fails the trial.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _environment_type(current):
            return "environment"
        current = current.__cause__ or current.__context__
    return "trial"


def stop_message(reason: str, trial: int | None, finished: int | None, target: int) -> str:
    """The one line a search stopped by an environment error ends with (the resume command follows).

    ``trial`` is the trial that was running and is not counted; None when the stop came
    between trials (``reason`` then says which trial, if any, it came after).
    """
    where = "" if trial is None else f" while running trial {trial}"
    done = "" if finished is None else f"; {finished} of {target} trials are finished"
    uncounted = "" if trial is None else f", trial {trial} is not counted"
    kept = " and the finished ones are kept" if finished else ""
    return (
        f"the search stopped{where}: {reason}{done}{uncounted}{kept}; "
        f"fix the disk, store, weights or data problem and resume with"
    )
