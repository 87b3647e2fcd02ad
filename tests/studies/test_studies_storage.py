"""Storage tests on real SQLite files: WAL, heartbeat settings, one-line errors, URL masking."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from blood_automl.errors import StorageError
from blood_automl.studies import (
    DEFAULT_STORAGE,
    artifact_dir,
    artifact_store_for,
    describe_storage,
    mask_url,
    open_storage,
    storage_url,
)
from blood_automl.studies.sqlite import SQLiteStorage, journal_mode


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_default_storage_is_created_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = open_storage(None)
    assert isinstance(storage, SQLiteStorage)
    assert storage_url(storage) == DEFAULT_STORAGE
    db = tmp_path / "studies" / "blood-automl.db"
    assert db.is_file()
    assert journal_mode(db) == "wal"


def test_wal_mode_busy_timeout_and_begin_immediate(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "s.db"
    storage = open_storage(f"sqlite:///{db}", busy_timeout=12.5)
    assert isinstance(storage, SQLiteStorage)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12500
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_heartbeat_settings_reach_optuna(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat_interval=7, grace_period=9)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 7
    assert storage.grace_period == 9
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert callback._max_retry == 1
    off = open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat=False)
    assert isinstance(off, optuna.storages.RDBStorage)
    assert off.get_heartbeat_interval() is None


def test_heartbeat_interval_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/e.db"
    monkeypatch.setenv("BLOOD_AUTOML_HEARTBEAT_INTERVAL", "2")
    storage = open_storage(url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == 2
    assert storage.grace_period is None  # Optuna's default: twice the interval
    assert open_storage(url, heartbeat_interval=5).get_heartbeat_interval() == 5
    monkeypatch.setenv("BLOOD_AUTOML_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(StorageError, match=r"BLOOD_AUTOML_HEARTBEAT_INTERVAL must be .* 'soon'"):
        open_storage(url)
    monkeypatch.delenv("BLOOD_AUTOML_HEARTBEAT_INTERVAL")
    assert open_storage(url).get_heartbeat_interval() == 60


def test_a_schema_stamped_by_another_program_meanwhile_is_retried() -> None:
    from sqlalchemy.exc import IntegrityError

    from blood_automl.studies.storage import _retry_schema_race

    calls: list[int] = []
    opened = object()

    def make() -> object:
        calls.append(1)
        if len(calls) == 1:  # what SQLite says when a dashboard stamped the schema first
            reason = Exception("UNIQUE constraint failed: alembic_version.version_num")
            raise IntegrityError("INSERT INTO alembic_version", {}, reason)
        return opened

    assert _retry_schema_race(make) is opened
    assert len(calls) == 2

    def other_error() -> object:
        raise IntegrityError("INSERT INTO trials", {}, Exception("NOT NULL constraint failed"))

    with pytest.raises(IntegrityError):  # not a race: raised at once
        _retry_schema_race(other_error)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_a_stale_trial_is_rerun_without_the_marks_of_how_it_ended(tmp_path: Path) -> None:
    from optuna.storages import fail_stale_trials

    storage = open_storage(f"sqlite:///{tmp_path}/stale.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("recipe", "r1")
    trial.set_user_attr("interrupted", "stopped by the user")  # by a process that outlived it
    trial.set_user_attr("fail_reason", "interrupted")
    time.sleep(2.5)
    fail_stale_trials(study)
    stale, rerun = study.get_trials()
    assert stale.state == optuna.trial.TrialState.FAIL and "interrupted" in stale.user_attrs
    assert rerun.state == optuna.trial.TrialState.WAITING
    assert rerun.system_attrs["failed_trial"] == stale.number
    assert rerun.user_attrs == {"recipe": "r1"}  # what it is, not how the dead run ended


def test_reopening_keeps_studies_and_in_memory_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    optuna.create_study(storage=open_storage(url), study_name="kept")
    assert optuna.get_all_study_names(open_storage(url)) == ["kept"]
    memory = open_storage("sqlite://")
    optuna.create_study(storage=memory, study_name="m").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )


def test_storage_pickles_with_its_sqlite_set_up(tmp_path: Path) -> None:
    import pickle

    storage = open_storage(f"sqlite:///{tmp_path}/p.db")
    clone = pickle.loads(pickle.dumps(storage))
    assert isinstance(clone, SQLiteStorage)
    with clone.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def _not_sqlite(tmp_path: Path) -> str:
    (tmp_path / "notes.db").write_text("just some text, not a database\n")
    return f"sqlite:///{tmp_path}/notes.db"


def _under_a_file(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("x")
    return f"sqlite:///{tmp_path}/afile/sub/x.db"


def _a_folder(tmp_path: Path) -> str:
    (tmp_path / "adir").mkdir()
    return f"sqlite:///{tmp_path}/adir"


def _other_program(tmp_path: Path) -> str:
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.commit()
    con.close()
    return f"sqlite:///{tmp_path}/other.db"


def _read_only_folder(tmp_path: Path) -> str:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return f"sqlite:///{folder}/x.db"


def _missing_driver(tmp_path: Path) -> str:
    for url, module in [
        ("postgresql+pg8000://bob:s3cret@db.example/x", "pg8000"),
        ("mysql+mysqlconnector://bob:s3cret@db.example/x", "mysql"),
        ("mysql+pymysql://bob:s3cret@db.example/x", "pymysql"),
    ]:
        try:
            __import__(module)
        except ImportError:
            return url
    pytest.skip("every candidate driver is installed here")


def _closed_port_server(tmp_path: Path) -> str:
    pytest.importorskip("psycopg2", reason="needs psycopg2 (blood-automl[postgres])")
    return f"postgresql+psycopg2://bob:s3cret@127.0.0.1:{_closed_port()}/studies"


ROOT_SKIP = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write read-only folders"
)

BAD_STORAGES = [
    pytest.param(lambda p: "not a url at all", "not a database URL", id="unparsable-url"),
    pytest.param(lambda p: "nosuchdb://bob:s3cret@h/x", "unknown database kind", id="unknown-db"),
    pytest.param(_missing_driver, "pip install", id="missing-driver"),
    pytest.param(
        lambda p: "postgresql+asyncpg://bob:s3cret@h/x", "asyncio driver", id="async-driver"
    ),
    pytest.param(_closed_port_server, "cannot connect", id="unreachable-server"),
    pytest.param(_not_sqlite, "is not a SQLite database", id="not-sqlite"),
    pytest.param(_other_program, "another program", id="sqlite-of-another-program"),
    pytest.param(_under_a_file, "is a file, not a folder", id="folder-is-a-file"),
    pytest.param(_a_folder, "is a folder, not a file", id="path-is-a-folder"),
    pytest.param(_read_only_folder, "not writable", id="read-only-folder", marks=ROOT_SKIP),
    pytest.param(lambda p: "   ", "empty", id="empty-url"),
]


@pytest.mark.parametrize(("make_url", "expected"), BAD_STORAGES)
def test_bad_storages_give_one_line_errors(tmp_path: Path, make_url, expected: str) -> None:
    url = make_url(tmp_path)
    with pytest.raises(StorageError) as info:
        open_storage(url, connect_timeout=3)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "s3cret" not in message
    if "s3cret" in url:
        assert "***" in message


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("psycopg") else real(name, *a),
    )
    with pytest.raises(StorageError, match=r'pip install "blood-automl\[postgres\]"'):
        open_storage("postgresql://bob:s3cret@127.0.0.1/x")


def test_a_bad_storage_writes_nothing(tmp_path: Path) -> None:
    url = _not_sqlite(tmp_path)
    before = (tmp_path / "notes.db").read_bytes()
    with pytest.raises(StorageError):
        open_storage(url)
    assert (tmp_path / "notes.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg2://u:p%40ss@h:5432/d", "postgresql+psycopg2://u:***@h:5432/d"),
        ("mysql+pymysql://u:we@ird:pw@h/d?charset=utf8", "mysql+pymysql://<unparseable URL>"),
        ("postgresql://u@h/d?password=secret&x=1", "postgresql://u@h/d?password=***&x=1"),
        ("postgresql://h/d", "postgresql://h/d"),
        ("sqlite:///studies/blood-automl.db", "sqlite:///studies/blood-automl.db"),
        ("not a url:pw@", "<unparseable URL>"),
        (None, DEFAULT_STORAGE),
    ],
)
def test_mask_url(url: str | None, masked: str) -> None:
    assert mask_url(url) == masked


def test_describe_storage_masks(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/d.db")
    assert describe_storage(storage) == f"sqlite:///{tmp_path}/d.db"
    cached = optuna.storages.get_storage(storage)
    assert describe_storage(cached) == f"sqlite:///{tmp_path}/d.db"


def test_artifact_store_next_to_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLOOD_AUTOML_ARTIFACT_ROOT", raising=False)
    assert artifact_dir(None, "s1") == Path("studies/s1/artifacts")
    assert artifact_dir(f"sqlite:///{tmp_path}/x/y.db", "s1") == tmp_path / "x/s1/artifacts"
    assert artifact_dir("postgresql://u:p@h/d", "s1") == Path("studies/s1/artifacts")
    monkeypatch.setenv("BLOOD_AUTOML_ARTIFACT_ROOT", str(tmp_path / "shared"))
    assert artifact_dir("postgresql://u:p@h/d", "s1") == tmp_path / "shared/s1/artifacts"
    assert artifact_dir("postgresql://u:p@h/d", "s1", root="r") == Path("r/s1/artifacts")
    store = artifact_store_for(None, "s1")
    assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
    assert (tmp_path / "studies/s1/artifacts").is_dir()
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(StorageError, match="artifact folder"):
        artifact_store_for(None, "s2", root=tmp_path / "blocker")


def test_importing_studies_does_not_import_tensorflow() -> None:
    code = (
        "import sys, json, blood_automl.studies;"
        "print(json.dumps([m for m in ('tensorflow', 'keras') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _plain_optuna_store(path: Path) -> str:
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="plain", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
    return url


def test_reading_a_plain_optuna_store_leaves_it_as_it_was(tmp_path: Path) -> None:
    url = _plain_optuna_store(tmp_path / "plain.db")
    before = ((tmp_path / "plain.db").read_bytes(), (tmp_path / "plain.db").stat().st_mtime_ns)
    storage = open_storage(url, heartbeat=False, existing=True)
    study = optuna.load_study(study_name="plain", storage=storage)
    assert len(study.get_trials()) == 2 and study.best_value is not None
    assert isinstance(storage, optuna.storages.RDBStorage)
    storage.engine.dispose()
    after = ((tmp_path / "plain.db").read_bytes(), (tmp_path / "plain.db").stat().st_mtime_ns)
    assert after == before
    assert journal_mode(tmp_path / "plain.db") == "delete"  # not switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.db"]


def test_an_existing_store_is_never_created(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/none.db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StorageError, match=r"no study storage|in-memory"):
            open_storage(url, existing=True)
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StorageError, match="holds no studies"):
        open_storage(f"sqlite:///{empty}", existing=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    assert empty.read_bytes() == b""


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE studies (id INTEGER, title TEXT)")  # a name Optuna uses too
    con.execute("INSERT INTO studies VALUES (1, 'mine')")
    con.commit()
    con.close()
    before = path.read_bytes()
    for existing in (False, True):
        with pytest.raises(StorageError, match=r"another program.*left untouched"):
            open_storage(f"sqlite:///{path}", existing=existing)
    assert path.read_bytes() == before
    assert journal_mode(path) == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    from blood_automl.studies import check_shared_url

    if kind == "fifo":
        path = tmp_path / "pipe.db"
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    for call in (
        lambda: open_storage(f"sqlite:///{path}"),
        lambda: open_storage(f"sqlite:///{path}", existing=True),
        lambda: check_shared_url(f"sqlite:///{path}"),
    ):
        with pytest.raises(StorageError, match=r"FIFO|character device"):
            call()


def test_search_refuses_an_in_memory_store_before_opening_anything() -> None:
    from blood_automl.studies import check_shared_url

    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared"):
        with pytest.raises(StorageError, match=r"in-memory SQLite database.*use a file"):
            check_shared_url(url)
    check_shared_url(None)
    check_shared_url("postgresql://u:pw@h/db")


def test_server_databases_of_another_program_are_left_untouched(postgres_url: str) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    base = make_url(postgres_url)
    name = f"app_{_closed_port()}"
    admin = psycopg2.connect(host=base.host, port=base.port, user=base.username, dbname="postgres")
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    url = base.set(database=name).render_as_string(hide_password=False)
    con = psycopg2.connect(host=base.host, port=base.port, user=base.username, dbname=name)
    try:
        with con, con.cursor() as cur:
            cur.execute("CREATE TABLE studies (id serial PRIMARY KEY, title text)")
        with pytest.raises(StorageError, match="no study storage"):
            open_storage(url, existing=True)
        with pytest.raises(StorageError, match=r"another program.*left untouched"):
            open_storage(url)
        with con.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            assert [row[0] for row in cur.fetchall()] == ["studies"]
    finally:
        con.close()
