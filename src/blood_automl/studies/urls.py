"""Storage URLs: the default, password masking, SQLite paths and the driver each URL needs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from blood_automl.errors import StorageError

DEFAULT_STORAGE = "sqlite:///studies/blood-automl.db"
"""The default study storage: a SQLite file under ``studies/`` in the working directory."""

_MASK = "***"
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "secret", "token", "sslpassword"})
# scheme://user:password@rest -- the password runs to the last '@' before the path.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:)(?P<pw>[^/]*)@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:" + "|".join(sorted(_SECRET_QUERY_KEYS)) + r")=)(?P<value>[^&#]*)",
    re.IGNORECASE,
)

# (dialect, driver) -> (module imported, how to install it)
_DRIVERS: dict[tuple[str, str], tuple[str, str]] = {
    ("postgresql", "psycopg2"): ("psycopg2", 'pip install "blood-automl[postgres]"'),
    ("postgresql", "psycopg"): ("psycopg", 'pip install "blood-automl[postgres]"'),
    ("postgresql", "pg8000"): ("pg8000", "pip install pg8000"),
    ("mysql", "mysqldb"): ("MySQLdb", "pip install mysqlclient"),
    ("mysql", "pymysql"): ("pymysql", "pip install pymysql"),
    ("mysql", "mysqlconnector"): ("mysql.connector", "pip install mysql-connector-python"),
    ("mysql", "mariadbconnector"): ("mariadb", "pip install mariadb"),
    ("mariadb", "mysqldb"): ("MySQLdb", "pip install mysqlclient"),
    ("mariadb", "pymysql"): ("pymysql", "pip install pymysql"),
}
_ASYNC_DRIVERS = frozenset({"asyncpg", "aiosqlite", "aiomysql", "asyncmy", "psycopg_async"})


def mask_url(url: str | URL | None) -> str:
    """Return ``url`` with its password (and any secret query value) replaced by ``***``.

    Works on URLs that SQLAlchemy cannot parse too, so error messages never show a secret.
    """
    if url is None:
        return DEFAULT_STORAGE
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    text = _USERINFO.sub(lambda m: m.group("head") + _MASK + "@", text, count=1)
    return _QUERY_SECRET.sub(lambda m: m.group("key") + _MASK, text)


def parse_url(url: str) -> URL:
    """Parse a storage URL, or raise a one-line :class:`StorageError` that shows it masked."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"cannot read the storage URL {mask_url(url)!r}: it is not a database URL; "
            f"use e.g. {DEFAULT_STORAGE} or postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    return parsed


def is_sqlite(url: URL) -> bool:
    """True for ``sqlite://`` URLs (any driver)."""
    return url.get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def driver_hint(url: URL) -> tuple[str, str] | None:
    """The module a URL's driver imports and how to install it, when blood-automl knows it."""
    return _DRIVERS.get((url.get_backend_name(), url.get_driver_name()))


def is_async_driver(url: URL) -> bool:
    """True when the URL names an asyncio driver, which Optuna's storage cannot use."""
    return url.get_driver_name() in _ASYNC_DRIVERS


def hide_secret(text: str, url: URL) -> str:
    """Remove the URL's password from a message (drivers may echo connection parameters)."""
    password = url.password
    if password:
        raw = str(password)
        for form in {raw, quote(raw, safe=""), quote_plus(raw, safe="")}:
            if form:
                text = text.replace(form, _MASK)
    return text
