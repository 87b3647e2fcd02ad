"""SQLite for several writers on one machine: WAL journal, busy timeout, BEGIN IMMEDIATE."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from optuna.storages import RDBStorage
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from blood_automl.errors import StorageError
from blood_automl.studies.optuna_private import rdb_engine

SQLITE_HEADER = b"SQLite format 3\x00"
OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
"""Tables every Optuna storage has (made together); a database with others only is foreign."""
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_FIX = "choose another file with --storage sqlite:///PATH/TO/FILE.db"


class SQLiteStorage(RDBStorage):
    """An Optuna ``RDBStorage`` on SQLite whose every transaction starts ``BEGIN IMMEDIATE``.

    pysqlite's own transaction control opens a transaction only at the first write, so a
    read-then-write (Optuna's claim of a waiting trial, its trial numbering) is not atomic
    between processes. Taking the write lock at ``BEGIN`` makes each Optuna session atomic;
    waiting writers queue on the busy timeout instead of failing with "database is locked",
    and WAL lets readers (the dashboard) go on meanwhile. ``synchronous=NORMAL``, SQLite's
    advice for WAL, skips the disk flush at each commit: a killed process loses nothing, a
    power cut may lose the last commits but never corrupts the file.
    """

    def __init__(self, url: str, *, busy_timeout: float, **kwargs: Any) -> None:
        engine_kwargs = {"connect_args": {"timeout": busy_timeout, "isolation_level": None}}
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)
        _set_up(rdb_engine(self))

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        _set_up(rdb_engine(self))


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _set_up(engine: Engine) -> None:
    if not event.contains(engine, "begin", _begin_immediate):
        event.listen(engine, "begin", _begin_immediate)
    if not event.contains(engine, "connect", _on_connect):
        event.listen(engine, "connect", _on_connect)
        engine.dispose()  # connections made while Optuna created its tables lack the pragma


def prepare_sqlite_file(path: Path, masked: str, busy_timeout: float) -> None:
    """Create the folder, refuse what is not a usable SQLite file, and switch it to WAL.

    Raises a one-line :class:`StorageError` for a folder that cannot be made or written, a
    path that is a folder, FIFO or device, a file that is not SQLite, or a SQLite file of
    another program (which is left untouched).
    """
    make_folder(path.parent, masked)
    exists = check_sqlite_path(path)
    if exists:
        _check_header(path)
    try:
        con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as e:
        raise _open_error(path, e) from None
    try:
        check_optuna_tables(path, _tables(con))
        mode = str(con.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise StorageError(
                f"cannot switch {path} to SQLite's WAL journal (it stays {mode!r}), which "
                f"parallel workers and the dashboard need; put it on a local disk or use "
                f"--storage postgresql://..."
            )
    except sqlite3.DatabaseError as e:
        raise _open_error(path, e) from None
    finally:
        con.close()


def check_existing_sqlite_file(path: Path, masked: str, busy_timeout: float) -> None:
    """Refuse, changing nothing, a path that is not an Optuna study storage made before.

    The file is opened without being created, with writes refused (``query_only``); its
    journal mode and tables stay as they are.
    """
    if not check_sqlite_path(path):
        raise StorageError(
            f"no study storage at {masked} (the file {path} does not exist); run "
            f"blood-automl search first, or pass the --storage URL the search used"
        )
    _check_header(path)
    try:
        con = ExistingFile(path, busy_timeout)()
    except sqlite3.Error as e:
        raise _open_error(path, e) from None
    try:
        con.execute("PRAGMA query_only = ON")
        tables = _tables(con)
        if not tables:
            raise StorageError(
                f"{path} holds no studies (an empty SQLite database); run blood-automl search "
                f"first, or pass the --storage URL the search used"
            )
        check_optuna_tables(path, tables)
        stamped = con.execute("SELECT count(*) FROM version_info").fetchone()[0]
        if "alembic_version" not in tables or not stamped:
            raise StorageError(
                f"{path} is an Optuna study storage whose set-up never finished (no schema "
                f"version recorded); open it once with blood-automl search, or {_FIX}"
            )
    except sqlite3.DatabaseError as e:
        raise _open_error(path, e) from None
    finally:
        con.close()


class ExistingFile:
    """A picklable SQLite ``creator``: connect to a file that must exist (never created)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.uri = f"file:{quote(str(path.absolute()))}?mode=rw"
        self.timeout = timeout

    def __call__(self) -> sqlite3.Connection:
        return sqlite3.connect(self.uri, uri=True, timeout=self.timeout, check_same_thread=False)


def check_sqlite_path(path: Path) -> bool:
    """Whether ``path`` exists; refuse at once (never blocking on it) what is not a plain file.

    A FIFO would block the first read for ever, a device or folder is no database file.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # the folder is checked when made
        return False
    except OSError as e:
        raise StorageError(
            f"cannot read the study storage {path} ({e.strerror or e}); {_FIX}"
        ) from None
    if stat.S_ISREG(mode):
        return True
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise StorageError(f"the study storage {path} is {kind}, not a file; {_FIX}")


def check_optuna_tables(path: Path, tables: set[str]) -> None:
    """Refuse a SQLite database with tables that are not an Optuna study storage's."""
    if not tables or tables >= OPTUNA_TABLES:
        return
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StorageError(
        f"{path} is a SQLite database of another program (tables: {shown}), "
        f"not an Optuna study storage; it was left untouched; {_FIX}"
    )


def _tables(con: sqlite3.Connection) -> set[str]:
    rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(row[0]) for row in rows}


def journal_mode(path: Path) -> str:
    """The journal mode of a SQLite file, read with a fresh connection (``wal`` when set up)."""
    con = sqlite3.connect(path)
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        con.close()


def make_folder(folder: Path, masked: str) -> None:
    """Create the storage's folder, refusing one under a file or one that is not writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise StorageError(
            f"cannot create the study storage folder {folder}: {existing} is a file, "
            f"not a folder; {_FIX}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"cannot create the study storage folder {folder} ({e.strerror or e}); "
            f"make it writable or {_FIX}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(
            f"the study storage folder {folder} is not writable (for {masked}); "
            f"make it writable or {_FIX}"
        )


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StorageError(f"cannot read the study storage {path} ({e.strerror or e})") from None
    if head and head != SQLITE_HEADER:
        raise StorageError(f"{path} is not a SQLite database (it starts with {head[:8]!r}); {_FIX}")


def _open_error(path: Path, e: sqlite3.Error) -> StorageError:
    text = str(e)
    if "not a database" in text:
        return StorageError(f"{path} is not a SQLite database ({text}); {_FIX}")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return StorageError(
            f"cannot write the study storage {path} ({text}): its folder or file is read-only "
            f"or on a disk SQLite cannot lock; make it writable or {_FIX}"
        )
    if "locked" in text:
        return StorageError(
            f"the study storage {path} stayed locked by another process ({text}); "
            f"retry, or check for a hung blood-automl process"
        )
    return StorageError(f"cannot open the study storage {path} ({text}); {_FIX}")


@contextlib.contextmanager
def init_lock(folder: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while Optuna creates its tables.

    Optuna creates the schema with separate statements, so two processes opening a new
    file at once could both try to create the same table. Where ``fcntl`` is missing (or
    the folder cannot be locked) it goes on unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"another process kept the study storage folder {folder} locked for "
                        f"{timeout:.0f} s while setting it up; retry"
                    ) from None
                time.sleep(0.05)
            except OSError:
                break  # the filesystem cannot lock: go on unlocked
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
