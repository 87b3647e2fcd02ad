"""Optuna's private and undocumented parts that blood-automl relies on, each behind one function.

Everything here reads or writes something Optuna does not promise to keep: underscore
attributes, a storage's undocumented fields, its table models, the system attributes it
keeps for its own bookkeeping. ``tests/test_private_apis.py`` exercises each function
against the installed Optuna, so an upgrade that changes one of them fails one test.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial
from sqlalchemy import select
from sqlalchemy.engine import Engine


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through: Optuna's private ``Study._storage``.

    Optuna wraps an ``RDBStorage`` in its private ``_CachedStorage`` here; the storage's
    own methods (heartbeats, writes by trial id) are only reachable through it.
    """
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (unique across studies): Optuna's private ``_trial_id``.

    A trial's ``number`` counts within its study; the storage's methods and a trial
    opened in another process need the id.
    """
    return trial._trial_id


def trial_from_id(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """A live ``optuna.Trial`` of ``study`` for a trial another process created.

    Optuna documents ``Trial`` as made by ``Study.ask`` / ``optimize`` only; built by hand
    with ``Trial(study, trial_id)`` it reads its parameters and reports to the RUNNING
    trial in the storage, which lets a trial process train what the parent sampled.
    """
    return optuna.Trial(study, trial_id)


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """The ``RDBStorage`` under a storage, or None for another kind of storage.

    Optuna wraps an ``RDBStorage`` in ``_CachedStorage`` (private) whose private
    ``_backend`` attribute holds it.
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def rdb_url(storage: BaseStorage) -> str | None:
    """The URL an RDB storage was opened with (undocumented ``RDBStorage.url``), if any."""
    backend = rdb_backend(storage)
    url = getattr(backend, "url", None)
    return url if isinstance(url, str) else None


def rdb_engine(storage: RDBStorage) -> Engine:
    """The SQLAlchemy engine of an ``RDBStorage``: its undocumented ``engine`` attribute.

    Used to add connection events (SQLite's ``BEGIN IMMEDIATE``) and to read the heartbeat
    table, which no Optuna method exposes.
    """
    return storage.engine


def grace_period(storage: RDBStorage) -> int | None:
    """The heartbeat grace period an ``RDBStorage`` was opened with (undocumented attribute)."""
    value = storage.grace_period
    return None if value is None else int(value)


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """Seconds between a running trial's heartbeats, None when the storage records none.

    ``get_heartbeat_interval`` belongs to Optuna's ``BaseHeartbeat``, which storages
    implement but which is not a documented user API.
    """
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    value = get_interval() if callable(get_interval) else None
    return int(value) if value else None


def record_heartbeat(storage: BaseStorage, trial_id: int) -> bool:
    """Record a heartbeat of the trial now, as Optuna's heartbeat thread does; False if none.

    ``record_heartbeat`` belongs to Optuna's ``BaseHeartbeat`` (not a documented user API).
    """
    record = getattr(storage, "record_heartbeat", None)
    if not callable(record) or heartbeat_interval(storage) is None:
        return False
    record(trial_id)
    return True


def trials_with_heartbeat(storage: RDBStorage, trial_ids: Iterable[int]) -> set[int]:
    """Which of ``trial_ids`` ever had a heartbeat recorded.

    A raw query on Optuna's ``trial_heartbeats`` table through its private model
    ``optuna.storages._rdb.models.TrialHeartbeatModel``; no Optuna method tells a trial
    that never beat from one whose beats stopped.
    """
    from optuna.storages._rdb.models import TrialHeartbeatModel

    ids = list(trial_ids)
    if not ids:
        return set()
    query = select(TrialHeartbeatModel.trial_id).where(TrialHeartbeatModel.trial_id.in_(ids))
    with rdb_engine(storage).connect() as connection:
        return {int(i) for i in connection.execute(query).scalars()}


def retried_numbers(trial: FrozenTrial) -> list[int]:
    """Numbers of the failed trials this trial re-runs: the system attribute ``retry_history``.

    ``RetryHeartbeatStaleTrialCallback`` writes it for its own bookkeeping; the key is
    not documented.
    """
    history = trial.system_attrs.get("retry_history")
    return [n for n in history if isinstance(n, int)] if isinstance(history, list) else []


def was_queued(trial: FrozenTrial) -> bool:
    """True for a trial taken from the queue (``enqueue_trial`` or a re-run).

    Optuna marks it with the undocumented system attribute ``fixed_params``.
    """
    return "fixed_params" in trial.system_attrs
