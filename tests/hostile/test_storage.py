"""Hostile storages: passwords that must stay hidden, other programs' databases, odd SQLite paths."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hostile.harness import SECRET, Case, Ctx, free_port, param, run_case

pytestmark = pytest.mark.slow

# Passwords of the forms generated passwords take; each holds SECRET, which must never show.
SLASH = f"pa/{SECRET}"
AT = f"pa@{SECRET}"  # not percent-encoded: SQLAlchemy would read "secret@127.0.0.1" as host


def _server(password: str, query: str = "") -> str:
    """A PostgreSQL URL with ``password`` on 127.0.0.1 at a port where nothing listens."""
    return f"postgresql+psycopg2://u:{password}@127.0.0.1:{free_port()}/db{query}"


def _no_fragment(*fragments: str) -> Callable[[Ctx, subprocess.CompletedProcess[str]], None]:
    """A check that no piece of the password (past its first two letters) was printed."""

    def check(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
        shown = result.stdout + result.stderr
        for fragment in fragments:
            assert fragment not in shown, f"{fragment!r} printed:\n{shown}"

    return check


def _search(ctx: Ctx, url: str) -> list[str]:
    return ["search", "--data", ctx.good_npz(), "--storage", url, "--workers", "1"]


def _dashboard(url: str, *more: str) -> list[str]:
    return ["dashboard", "--storage", url, "--port", str(free_port()), *more]


def _foreign_sqlite(ctx: Ctx) -> str:
    """Another program's SQLite file that happens to have a ``studies`` table."""
    path = ctx.tmp / "clinic.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, patient TEXT, result TEXT)")
    con.execute("INSERT INTO studies (patient, result) VALUES ('p1', 'normal')")
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _pipe_folder(ctx: Ctx) -> Path:
    # Beside the case's folder: the harness reads every file it watches, and reading a FIFO
    # would block. _only_the_fifo checks this folder instead.
    return ctx.tmp.parent / f"{ctx.tmp.name}-pipe"


def _fifo(ctx: Ctx) -> str:
    folder = _pipe_folder(ctx)
    folder.mkdir()
    os.mkfifo(folder / "pipe.db")
    return f"sqlite:///{folder / 'pipe.db'}"


def _only_the_fifo(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    assert [p.name for p in _pipe_folder(ctx).iterdir()] == ["pipe.db"]


def _folder(ctx: Ctx) -> str:
    (ctx.tmp / "store.db").mkdir()
    return f"sqlite:///{ctx.tmp / 'store.db'}"


# -- passwords with '/' (SQLAlchemy reads them; text patterns did not) ------------------------


def search_slash_password(ctx: Ctx) -> list[str]:
    return _search(ctx, _server(SLASH))


def refit_slash_password(ctx: Ctx) -> list[str]:
    return ["refit-best", "--storage", _server(SLASH)]


def report_slash_password(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _server(SLASH)]


def dashboard_slash_password(ctx: Ctx) -> list[str]:
    return _dashboard(_server(SLASH))


# -- passwords with an unencoded '@' (the URL cannot be read as meant) ------------------------


def search_at_password(ctx: Ctx) -> list[str]:
    return _search(ctx, _server(AT))


def refit_at_password(ctx: Ctx) -> list[str]:
    return ["refit-best", "--storage", _server(AT)]


def report_at_password(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _server(AT)]


def dashboard_at_password(ctx: Ctx) -> list[str]:
    return _dashboard(_server(AT))


def report_secret_query_parameter(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _server("x", f"?auth_token={SECRET}")]


# -- other programs' databases and stores made by plain Optuna stay untouched ---------------


def search_foreign_sqlite(ctx: Ctx) -> list[str]:
    return _search(ctx, _foreign_sqlite(ctx))


def report_foreign_sqlite(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _foreign_sqlite(ctx)]


def refit_foreign_sqlite(ctx: Ctx) -> list[str]:
    return ["refit-best", "--storage", _foreign_sqlite(ctx)]


def dashboard_foreign_sqlite(ctx: Ctx) -> list[str]:
    return _dashboard(_foreign_sqlite(ctx))


def report_plain_optuna_store(ctx: Ctx) -> list[str]:
    return ["report", "--study", "empty", "--storage", ctx.store("empty", plain=True)]


def dashboard_plain_optuna_store(ctx: Ctx) -> list[str]:
    return _dashboard(ctx.store("kept", plain=True), "--study", "nope")


def _foreign_postgres(ctx: Ctx) -> list[str]:
    """A PostgreSQL database of another program (one table, no Optuna tables)."""
    import psycopg2

    base: str = ctx.request.getfixturevalue("postgres_url")
    name = f"clinic_{free_port()}"
    admin = psycopg2.connect(base.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    url = base.rsplit("/", 1)[0] + f"/{name}"
    con = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with con, con.cursor() as cur:
            cur.execute("CREATE TABLE patients (id serial PRIMARY KEY, name text)")
    finally:
        con.close()
    ctx.env["CLINIC_URL"] = url
    return ["report", "--storage", url]


def _postgres_tables_unchanged(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    import psycopg2

    con = psycopg2.connect(ctx.env["CLINIC_URL"].replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = sorted(row[0] for row in cur.fetchall())
    finally:
        con.close()
    assert tables == ["patients"], f"tables added to another program's database: {tables}"


# -- stores that cannot be shared, and paths that are no file ---------------------------------


def search_memory_store(ctx: Ctx) -> list[str]:
    return _search(ctx, "sqlite:///:memory:")


def search_bare_sqlite_url(ctx: Ctx) -> list[str]:
    return _search(ctx, "sqlite://")


def report_fifo_store(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _fifo(ctx)]


def search_fifo_store(ctx: Ctx) -> list[str]:
    return _search(ctx, _fifo(ctx))


def search_device_store(ctx: Ctx) -> list[str]:
    return _search(ctx, "sqlite:////dev/null")


def report_folder_store(ctx: Ctx) -> list[str]:
    return ["report", "--storage", _folder(ctx)]


def dashboard_folder_store(ctx: Ctx) -> list[str]:
    return _dashboard(_folder(ctx))


def _hidden(password: str) -> Callable[[Ctx, subprocess.CompletedProcess[str]], None]:
    return _no_fragment(password, password[2:])


UNREACHABLE = ("cannot connect", "check that the server runs")
ENCODE = ("cannot read the storage URL", "percent-encode @ as %40")
FOREIGN = ("of another program", "left untouched")
IN_MEMORY = ("in-memory SQLite database", "use a file such as")

CASES = [
    Case("search-password-with-slash", search_slash_password, *UNREACHABLE, check=_hidden(SLASH)),
    Case("refit-password-with-slash", refit_slash_password, *UNREACHABLE, check=_hidden(SLASH)),
    Case("report-password-with-slash", report_slash_password, *UNREACHABLE, check=_hidden(SLASH)),
    Case(
        "dashboard-password-with-slash",
        dashboard_slash_password,
        *UNREACHABLE,
        check=_hidden(SLASH),
    ),
    Case("search-password-with-at", search_at_password, *ENCODE, check=_hidden(AT)),
    Case("refit-password-with-at", refit_at_password, *ENCODE, check=_hidden(AT)),
    Case("report-password-with-at", report_at_password, *ENCODE, check=_hidden(AT)),
    Case("dashboard-password-with-at", dashboard_at_password, *ENCODE, check=_hidden(AT)),
    Case("report-secret-query-parameter", report_secret_query_parameter, *UNREACHABLE),
    Case("search-foreign-sqlite", search_foreign_sqlite, *FOREIGN),
    Case("report-foreign-sqlite", report_foreign_sqlite, *FOREIGN),
    Case("refit-foreign-sqlite", refit_foreign_sqlite, *FOREIGN),
    Case("dashboard-foreign-sqlite", dashboard_foreign_sqlite, *FOREIGN),
    Case("report-plain-optuna-store", report_plain_optuna_store, "nothing to report", "let blood"),
    Case(
        "dashboard-plain-optuna-store",
        dashboard_plain_optuna_store,
        "'nope' not found",
        "give --study one of",
    ),
    Case(
        "report-foreign-postgres-database",
        _foreign_postgres,
        "no study storage",
        "run blood-automl search first",
        needs_psycopg2=True,
        check=_postgres_tables_unchanged,
    ),
    Case("search-in-memory-store", search_memory_store, *IN_MEMORY),
    Case("search-bare-sqlite-url", search_bare_sqlite_url, *IN_MEMORY),
    Case(
        "report-fifo-store",
        report_fifo_store,
        "is a FIFO",
        "choose another file",
        timeout=60,
        check=_only_the_fifo,
    ),
    Case(
        "search-fifo-store",
        search_fifo_store,
        "is a FIFO",
        "choose another file",
        timeout=60,
        check=_only_the_fifo,
    ),
    Case("search-device-store", search_device_store, "character device", "choose another file"),
    Case("report-folder-store", report_folder_store, "is a folder", "choose another file"),
    Case("dashboard-folder-store", dashboard_folder_store, "is a folder", "choose another file"),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_storage_gives_one_error_line_and_leaks_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
