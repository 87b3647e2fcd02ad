"""Storage URLs: the default, password masking, SQLite paths and the driver each URL needs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from blood_automl.errors import StorageError

DEFAULT_STORAGE = "sqlite:///studies/blood-automl.db"
"""The default study storage: a SQLite file under ``studies/`` in the working directory."""

UNPARSEABLE = "<unparseable URL>"
"""What :func:`mask_url` shows of a URL it cannot read, after the scheme when there is one."""
_MASK = "***"
_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token", "credential", "apikey", "api_key")
"""A query parameter whose name contains one of these holds a secret (``sslpassword=``...)."""
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")
_ENCODE_HINT = "percent-encode @ as %40, : as %3A and / as %2F in the user name and password"

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
    """``url`` as SQLAlchemy reads it, its password and secret query values shown as ``***``.

    The URL is parsed, never searched with patterns, so a password holding ``/``, ``@``,
    ``:`` or ``%2F`` is hidden whole. A URL that cannot be read (or whose host holds an
    ``@``, the end of an unencoded password) shows only its scheme and ``<unparseable URL>``.
    """
    if url is None:
        return DEFAULT_STORAGE
    parsed = url if isinstance(url, URL) else _read(str(url))
    if parsed is None:
        scheme = _scheme(str(url))
        return f"{scheme}://{UNPARSEABLE}" if scheme else UNPARSEABLE
    masked = masked_url(parsed)
    if masked == parsed and isinstance(url, str):
        return url  # nothing secret in it: shown as given (SQLite paths unencoded)
    # SQLAlchemy renders query values encoded: "***" would read "%2A%2A%2A"
    return masked.render_as_string(hide_password=True).replace(quote_plus(_MASK), _MASK)


def masked_url(url: URL) -> URL:
    """A copy of ``url`` with its password and secret query values replaced by ``***``."""
    if url.password is not None:
        url = url.set(password=_MASK)
    secret = [key for key in url.query if is_secret_key(key)]
    if secret:
        url = url.update_query_dict({key: _MASK for key in secret})
    return url


def is_secret_key(key: str) -> bool:
    """True for a query parameter that holds a secret (``password``, ``sslpassword``, ``token``...)."""
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _read(text: str) -> URL | None:
    """``text`` parsed by SQLAlchemy, or None when it cannot be read safely."""
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError, TypeError):
        return None
    if parsed.get_backend_name() != "sqlite" and _stray_at(text, parsed):
        return None  # "user:pa@ss@host": the password's own '@' ended it early
    return parsed


def _stray_at(text: str, url: URL) -> bool:
    """True when the URL has an ``@`` beyond the one that ends its user name and password.

    An unencoded ``@`` in a password makes SQLAlchemy read the rest of the password as the
    host, the database or the query (``pa@ss/word@host``: host ``ss``, database ``word@host``).
    """
    if "@" in (url.host or "") or "@" in (url.database or ""):
        return True
    return text.partition("://")[2].count("@") > 1 + (url.username or "").count("@")


def _scheme(text: str) -> str | None:
    """The scheme before ``://`` when it is a plain name (letters, digits, ``+-.``), else None."""
    scheme, sep, _ = text.strip().partition("://")
    if not sep or not scheme or not scheme[0].isalpha():
        return None
    return scheme if set(scheme.lower()) <= _SCHEME_CHARS else None


def parse_url(url: str) -> URL:
    """Parse a storage URL, or raise a one-line :class:`StorageError` that shows it masked."""
    parsed = _read(url)
    if parsed is None:
        raise StorageError(
            f"cannot read the storage URL {mask_url(url)}: it is not a database URL; "
            f"use e.g. {DEFAULT_STORAGE} or postgresql://USER:PASSWORD@HOST/DB ({_ENCODE_HINT})"
        )
    return parsed


def is_sqlite(url: URL) -> bool:
    """True for ``sqlite://`` URLs (any driver)."""
    return url.get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database.

    Understands the ``sqlite:///file:PATH?mode=...&uri=true`` form too.
    """
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if database.startswith("file:") and str(url.query.get("uri", "")).lower() == "true":
        parts = urlsplit(database)
        path = unquote(parts.path)
        if not path or path == ":memory:" or "mode=memory" in parts.query.split("&"):
            return None
        return Path(path)
    return Path(database)


def is_in_memory(url: URL) -> bool:
    """True for a SQLite URL that names no file (``sqlite://``, ``sqlite:///:memory:``)."""
    return is_sqlite(url) and sqlite_file(url) is None


def driver_hint(url: URL) -> tuple[str, str] | None:
    """The module a URL's driver imports and how to install it, when blood-automl knows it."""
    return _DRIVERS.get((url.get_backend_name(), url.get_driver_name()))


def is_async_driver(url: URL) -> bool:
    """True when the URL names an asyncio driver, which Optuna's storage cannot use."""
    return url.get_driver_name() in _ASYNC_DRIVERS


def hide_secret(text: str, url: URL) -> str:
    """Remove the URL's password and secret query values from a message (drivers may echo them)."""
    secrets = [str(url.password)] if url.password else []
    for key, value in url.query.items():
        if is_secret_key(key):
            secrets += [value] if isinstance(value, str) else list(value)
    for raw in secrets:
        for form in sorted({raw, quote(raw, safe=""), quote_plus(raw, safe="")}, key=len)[::-1]:
            if form:
                text = text.replace(form, _MASK)
    return text
