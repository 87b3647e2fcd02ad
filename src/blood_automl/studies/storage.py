"""Opening a study storage: SQLite set up for parallel workers, any RDB with heartbeats."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial
from sqlalchemy.engine import URL
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from blood_automl.errors import StorageError
from blood_automl.studies.optuna_private import rdb_url
from blood_automl.studies.records import OUTCOME_ATTRS
from blood_automl.studies.sqlite import (
    OPTUNA_TABLES,
    ExistingFile,
    SQLiteStorage,
    check_existing_sqlite_file,
    check_sqlite_path,
    init_lock,
    make_folder,
    prepare_sqlite_file,
)
from blood_automl.studies.urls import (
    DEFAULT_STORAGE,
    driver_hint,
    hide_secret,
    is_async_driver,
    is_in_memory,
    mask_url,
    parse_url,
    sqlite_file,
)

HEARTBEAT_INTERVAL = 60
"""Seconds between a running trial's heartbeats on RDB storages."""
HEARTBEAT_ENV = "BLOOD_AUTOML_HEARTBEAT_INTERVAL"
"""Environment variable that replaces :data:`HEARTBEAT_INTERVAL` (whole seconds >= 1).

The grace period after which a silent trial is failed and re-run follows it (twice the
interval), so a shorter interval re-runs a dead worker's trial sooner; every worker of a
study should use the same value. Tests use it to kill and restart workers in seconds.
"""
MAX_RETRY = 1
"""How many times a trial whose worker died is re-run with the same parameters."""
BUSY_TIMEOUT = 60.0
"""Seconds a SQLite writer waits for another one before "database is locked"."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a database server before saying it cannot be reached."""

# driver name -> its connect() keyword for a connection timeout in seconds
_TIMEOUT_ARG = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mysqlconnector": "connection_timeout",
    "mariadbconnector": "connect_timeout",
}


def open_storage(
    url: str | None = None,
    *,
    heartbeat: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = MAX_RETRY,
    busy_timeout: float = BUSY_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    existing: bool = False,
) -> BaseStorage:
    """Open (creating if needed) the Optuna storage at ``url`` (default :data:`DEFAULT_STORAGE`).

    SQLite files get their folder created, the WAL journal, a busy timeout and
    ``BEGIN IMMEDIATE`` transactions, so several worker processes on one machine and a
    dashboard can share the file. With ``heartbeat`` every RDB storage (SQLite, PostgreSQL,
    MySQL) records a heartbeat of each running trial every ``heartbeat_interval`` seconds
    (default ``$BLOOD_AUTOML_HEARTBEAT_INTERVAL``, else :data:`HEARTBEAT_INTERVAL`); a trial silent for ``grace_period`` seconds (default twice the interval) is marked
    FAIL by the next worker asking for a trial and re-run with the same parameters up to
    ``max_retry`` times (Optuna's ``RetryHeartbeatStaleTrialCallback``).

    With ``existing`` (commands that read a study: refit-best, report, dashboard) nothing is
    created or converted: the storage must already hold Optuna's tables, a SQLite file is
    opened without being created and keeps its journal mode, and no table is added.

    Raises :class:`StorageError` (one line, the URL masked) when the URL cannot be parsed,
    its driver is not installed, the server cannot be reached, the SQLite folder cannot be
    written, the path is a folder, FIFO or device, or the file is not a SQLite database or
    belongs to another program (left untouched).
    """
    text = DEFAULT_STORAGE if url is None else url.strip()
    if not text:
        raise StorageError(f"the storage URL is empty; give e.g. --storage {DEFAULT_STORAGE}")
    parsed = parse_url(text)
    masked = mask_url(text)
    parsed = _installed_default_driver(parsed)
    if parsed.drivername != parse_url(text).drivername:
        text = parsed.render_as_string(hide_password=False)
    _check_driver(parsed, masked)
    if heartbeat_interval is None:
        heartbeat_interval = default_heartbeat_interval()
    options = _heartbeat_options(heartbeat, heartbeat_interval, grace_period, max_retry)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is None:  # in memory: one process, and each thread its own database
            if existing:
                raise StorageError(
                    f"the storage URL {masked} names an in-memory SQLite database, which "
                    f"holds no study; pass the --storage URL the search used"
                )
            return _construct(lambda: RDBStorage(text), parsed, masked, connect_timeout)
        if existing:
            check_existing_sqlite_file(path, masked, busy_timeout)
            kwargs = {"creator": ExistingFile(path, busy_timeout)}
            return _construct(
                lambda: RDBStorage(text, engine_kwargs=kwargs, skip_table_creation=True, **options),
                parsed,
                masked,
                connect_timeout,
            )
        make_folder(path.parent, masked)
        with init_lock(path.parent, busy_timeout):
            prepare_sqlite_file(path, masked, busy_timeout)
            return _construct(
                lambda: _retry_schema_race(
                    lambda: SQLiteStorage(text, busy_timeout=busy_timeout, **options)
                ),
                parsed,
                masked,
                connect_timeout,
            )
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    timeout_arg = _TIMEOUT_ARG.get(parsed.get_driver_name())
    if timeout_arg and timeout_arg not in parsed.query:
        engine_kwargs["connect_args"] = {timeout_arg: max(1, round(connect_timeout))}

    def make() -> BaseStorage:
        _check_server_tables(text, engine_kwargs, masked, existing)
        return _retry_schema_race(
            lambda: RDBStorage(
                text, engine_kwargs=engine_kwargs, skip_table_creation=existing, **options
            )
        )

    return _construct(make, parsed, masked, connect_timeout)


def check_shared_url(url: str | None) -> None:
    """Refuse, before anything is opened or created, a storage URL a search cannot share.

    A study must live in a file or on a server that every worker, trial process and a later
    refit-best opens: an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``)
    is lost with the process. A SQLite path that is a folder, FIFO or device is refused too.
    """
    text = DEFAULT_STORAGE if url is None else url.strip()
    if not text:
        raise StorageError(f"the storage URL is empty; give e.g. --storage {DEFAULT_STORAGE}")
    parsed = parse_url(text)
    if is_in_memory(parsed):
        raise StorageError(
            f"the storage URL {mask_url(text)} names an in-memory SQLite database, which lives "
            f"and dies with one process, but a study's workers, trials and refit-best must "
            f"share it; use a file such as --storage {DEFAULT_STORAGE}"
        )
    path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None:
        check_sqlite_path(path)


def default_heartbeat_interval() -> int:
    """``$BLOOD_AUTOML_HEARTBEAT_INTERVAL`` if set, else :data:`HEARTBEAT_INTERVAL` seconds."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return HEARTBEAT_INTERVAL
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise StorageError(
            f"{HEARTBEAT_ENV} must be a whole number of seconds >= 1, but got {text!r}; "
            f"unset it to use the default ({HEARTBEAT_INTERVAL} s)"
        )
    return value


def storage_url(storage: BaseStorage) -> str | None:
    """The URL an Optuna storage was opened with (in clear: do not print it), if it has one."""
    return rdb_url(storage)


def describe_storage(storage: BaseStorage) -> str:
    """A printable name for a storage: its masked URL, else its class name."""
    url = storage_url(storage)
    return mask_url(url) if url is not None else type(storage).__name__


def resolve_storage(storage: BaseStorage | str | None) -> BaseStorage:
    """``storage`` itself, or the storage opened from a URL (``None``: the default)."""
    if isinstance(storage, BaseStorage):
        return storage
    return open_storage(storage)


@contextlib.contextmanager
def storage_errors(storage: BaseStorage, action: str) -> Iterator[None]:
    """Turn database errors raised inside the block into a one-line :class:`StorageError`."""
    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        url = storage_url(storage)
        reason = _root_message(e, parse_url(url)) if url else str(e).splitlines()[0]
        raise StorageError(
            f"{action} failed in the study storage {describe_storage(storage)} ({reason})"
        ) from None


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's re-run of a trial whose worker died, without the marks of how that run ended.

    Optuna copies the failed trial's user attributes to the re-run. ``interrupted`` and
    ``fail_reason`` there describe the dead run (a trial process that outlived its worker
    may have written them); inherited, they would make the re-run look interrupted, so it
    would never count towards ``--trials`` however it ends.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        rerun = copy.copy(trial)
        rerun.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in OUTCOME_ATTRS}
        super().__call__(study, rerun)


def _heartbeat_options(
    heartbeat: bool, interval: int, grace_period: int | None, max_retry: int
) -> dict[str, Any]:
    if not heartbeat:
        return {}
    if interval < 1 or (grace_period is not None and grace_period < 1) or max_retry < 0:
        raise StorageError(
            f"heartbeat_interval ({interval}) and grace_period ({grace_period}) must be "
            f"whole seconds >= 1 and max_retry ({max_retry}) >= 0"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        callback = RetryStaleTrial(max_retry=max_retry)
    return {
        "heartbeat_interval": int(interval),
        "grace_period": grace_period,
        "heartbeat_stale_trial_callback": callback,
    }


def _installed_default_driver(url: URL) -> URL:
    """For a bare ``postgresql://`` or ``mysql://``, the installed driver SQLAlchemy would not pick.

    SQLAlchemy 2.1 defaults to psycopg (3) and mysqlclient; blood-automl's ``postgres``
    extra installs psycopg2, so a bare URL uses whichever of the two is there.
    """
    alternatives = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}
    if url.drivername not in alternatives:
        return url
    default_module, other = alternatives[url.drivername]
    if importlib.util.find_spec(default_module) is None and importlib.util.find_spec(other):
        return url.set(drivername=f"{url.drivername}+{other.lower()}")
    return url


def _check_driver(url: URL, masked: str) -> None:
    try:
        backend, driver = url.get_backend_name(), url.get_driver_name()
    except NoSuchModuleError:
        raise StorageError(
            f"unknown database kind {url.drivername!r} in the storage URL {masked}; "
            f"use sqlite:///FILE.db, postgresql://... or mysql+pymysql://..."
        ) from None
    if is_async_driver(url):
        raise StorageError(
            f"the storage URL {masked} names the asyncio driver {driver!r}, which Optuna "
            f"cannot use; drop '+{driver}' or name a plain driver (e.g. postgresql+psycopg2)"
        )
    hint = driver_hint(url)
    if hint is not None:
        module, install = hint
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise StorageError(
                f"the storage URL {masked} needs the Python package {module!r} for "
                f"{backend}+{driver}, which is not installed; install it with: {install}"
            )
        return
    try:
        url.get_dialect().import_dbapi()
    except ImportError as e:
        raise StorageError(
            f"the storage URL {masked} needs the driver {driver!r} for {backend}, which is "
            f"not installed ({e}); pip install it"
        ) from None


def _retry_schema_race(make: Callable[[], BaseStorage], attempts: int = 5) -> BaseStorage:
    """Build a storage again when another process created Optuna's tables at the same moment.

    Two workers opening a new database together both try to create the schema; one fails
    ("already exists" or "UNIQUE constraint failed" on SQLite, a duplicate type or key on
    PostgreSQL). The next try finds the tables. On SQLite our own workers also take a
    folder lock; this covers other programs (a dashboard) and servers.
    """
    for attempt in range(1, attempts + 1):
        try:
            return make()
        except SQLAlchemyError as e:
            text = str(e)
            # SQLite says "UNIQUE constraint failed" when another program (plain Optuna, a
            # dashboard) stamped Optuna's schema version (alembic_version) a moment before.
            race = any(
                marker in text
                for marker in (
                    "already exists",
                    "duplicate key",
                    "Duplicate",
                    "UNIQUE constraint failed",
                )
            )
            if attempt == attempts or not race:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _check_server_tables(
    url: str, engine_kwargs: dict[str, Any], masked: str, existing: bool
) -> None:
    """Refuse a server database that is not (``existing``) or cannot become an Optuna storage.

    ``existing``: it must hold Optuna's tables (nothing is created). Otherwise a database
    with a ``studies`` or ``trials`` table that is not Optuna's is another program's: Optuna
    would add its tables beside them and then fail.
    """
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if tables >= OPTUNA_TABLES:
        return
    if existing:
        raise StorageError(
            f"no study storage at {masked} (the database has no Optuna tables; nothing was "
            f"added); run blood-automl search first, or pass the --storage URL the search used"
        )
    clash = sorted(tables & {"studies", "trials", "version_info"})
    if clash:
        raise StorageError(
            f"the database at {masked} belongs to another program (it has a table "
            f"{clash[0]!r} that is not Optuna's); it was left untouched; give --storage "
            f"another database"
        )


def _construct(
    make: Callable[[], BaseStorage], url: URL, masked: str, connect_timeout: float
) -> BaseStorage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return make()
    except StorageError:
        raise
    except ImportError as e:
        raise StorageError(
            f"the storage URL {masked} needs a database driver that cannot be imported "
            f"({_root_message(e, url)}); pip install it"
        ) from None
    except RuntimeError as e:
        if "no longer compatible" not in str(e):
            raise
        raise StorageError(
            f"the study storage {masked} was made by another Optuna version "
            f"({optuna.__version__} here); upgrade it with: optuna storage upgrade "
            f"--storage URL (back it up first), or use another --storage"
        ) from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        reason = _root_message(e, url)
        if url.get_backend_name() == "sqlite":
            raise StorageError(
                f"cannot open the study storage {masked} ({reason}); check that the file is "
                f"a writable SQLite database on a local disk"
            ) from None
        raise StorageError(
            f"cannot connect to the study storage {masked} ({reason}); check that the "
            f"server runs and is reachable (waited up to {connect_timeout:.0f} s), and the "
            f"user, password and database name"
        ) from None


def _root_message(e: BaseException, url: URL) -> str:
    """The innermost driver message of an exception chain, one line, password removed."""
    inner: BaseException = e
    seen = {id(inner)}
    while True:
        nxt = getattr(inner, "orig", None) or inner.__cause__ or inner.__context__
        if not isinstance(nxt, BaseException) or id(nxt) in seen:
            break
        seen.add(id(nxt))
        inner = nxt
    text = " ".join(str(inner).split()) or type(inner).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return hide_secret(text, url)


def open_existing_storage(url: str | None) -> BaseStorage:
    """Open a storage for reading: nothing created, converted or added (see ``existing``)."""
    return open_storage(url, heartbeat=False, existing=True)
