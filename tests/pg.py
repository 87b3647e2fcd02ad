"""A real PostgreSQL server for the tests: $BLOOD_AUTOML_TEST_POSTGRES_URL, or a throwaway cluster.

The ``postgres_url`` fixture (registered in ``tests/conftest.py``) yields an SQLAlchemy URL
``postgresql+psycopg2://...`` of a database the tests may fill. Without the environment
variable it runs Debian's ``initdb`` and ``pg_ctl`` (``/usr/lib/postgresql/*/bin``) on a
temporary folder: trust authentication, listening on 127.0.0.1 only on a free port, its
Unix socket in that folder; stopped and removed at the end of the session. ``initdb``
refuses to run as root, so as root the server runs as the ``postgres`` system user.
Every wait is bounded. Tests skip with the reason when no server can be had.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_ENV = "BLOOD_AUTOML_TEST_POSTGRES_URL"
NO_SERVER = (
    "no PostgreSQL server: set BLOOD_AUTOML_TEST_POSTGRES_URL or install Debian's postgresql "
    "package"
)
DATABASE = "blood_automl_test"
HOST = "127.0.0.1"
COMMAND_TIMEOUT = 60.0  # seconds for initdb, pg_ctl start / stop
CONNECT_TIMEOUT = 10  # seconds psycopg2 waits for the server
# superuser "postgres" whoever runs it, no passwords, no fsync at creation: a test cluster
INITDB_OPTIONS = ("-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
# loopback only, the socket in the cluster's folder, many workers, no durability needed
SERVER_OPTIONS = (
    "-c listen_addresses={host} -p {port} -k {socket_dir} -c max_connections=300 "
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
)


def psycopg2_url(url: str) -> str:
    """``url`` with the psycopg2 driver named (plain Optuna, as a dashboard, needs it spelled out)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, if any."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        bin_dir = Path(candidate)
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder, owned by the user that runs it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        self.user: pwd.struct_passwd | None = None
        if self.as_root:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and initdb refuses root, but there is no 'postgres' "
                    "system user to run the server as"
                ) from None
        # Directly under the system temp folder: pytest's own folders are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="blood-automl-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.root,  # the server's user may not enter the caller's folder
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""
            text = " ".join(f"{done.stdout} {done.stderr} {log}".split())[-2000:]
            raise RuntimeError(f"{args[0]} failed with exit code {done.returncode}: {text}")

    def start(self, attempts: int = 3) -> str:
        """initdb, then pg_ctl start on a free port (another try if the port was taken meanwhile)."""
        self._run("initdb", "-D", str(self.data), *INITDB_OPTIONS)
        for attempt in range(1, attempts + 1):
            self.port = _free_port()
            options = SERVER_OPTIONS.format(host=HOST, port=self.port, socket_dir=self.root)
            try:
                wait = str(int(COMMAND_TIMEOUT) - 5)
                data, log = str(self.data), str(self.log)
                self._run("pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", wait, "start")
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if attempt == attempts:
                    raise
                self.stop()
        self._create_database()
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{DATABASE}"

    def _create_database(self) -> None:
        import psycopg2

        con = psycopg2.connect(
            host=HOST,
            port=self.port,
            user="postgres",
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT,
        )
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            con.close()

    def stop(self) -> None:
        """Stop the server now (immediate mode), killing it if pg_ctl cannot."""
        if not (self.data / "postmaster.pid").is_file():
            return
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_server(bin_dir: Path) -> Iterator[str]:
    """Start a cluster with the binaries in ``bin_dir``; yield its database URL; stop and remove it."""
    cluster = Cluster(bin_dir)
    try:
        url = cluster.start()
        yield url
    finally:
        cluster.stop()
        cluster.remove()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for the session, as a ``postgresql+psycopg2://`` URL (else skip).

    Studies written there outlive a test: give each test its own study names.
    """
    pytest.importorskip("psycopg2", reason="needs psycopg2 (pip install psycopg2-binary)")
    given = os.environ.get(POSTGRES_ENV)
    if given:
        yield psycopg2_url(given)
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(NO_SERVER)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip(f"{NO_SERVER} (running as root without runuser to start it as 'postgres')")
    try:
        server = throwaway_server(bin_dir)
        url = server.__enter__()
    except Exception as e:  # any reason the server cannot start: say it and skip
        pytest.skip(f"{NO_SERVER} (a throwaway server in {bin_dir} could not start: {e})")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)
