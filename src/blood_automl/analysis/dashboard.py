"""optuna-dashboard on a study's storage, with the per-trial images of every study it lists."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage

from blood_automl.analysis.dashboard_server import dashboard_app, serve_app
from blood_automl.errors import ConfigError, StorageError
from blood_automl.studies import (
    DEFAULT_STUDY,
    artifact_dir,
    artifact_store_for,
    check_study_name,
    get_study,
    mask_url,
    open_existing_storage,
)

DEFAULT_HOST = "127.0.0.1"
"""Loopback: only this machine can open the dashboard."""
DEFAULT_PORT = 8080
"""optuna-dashboard's own default port."""


class StudiesArtifactStore:
    """An Optuna artifact store that reads from the artifact folder of every study in a storage.

    The dashboard lists all studies of a storage while blood-automl keeps each study's
    files in its own ``<study>/artifacts`` folder; this store finds an artifact in any of
    them (the primary study's first) and writes new ones (uploads from the dashboard) to
    the primary study's folder.
    """

    def __init__(self, storage: BaseStorage, url: str | None, primary: str) -> None:
        self._storage = storage
        self._url = url
        self._primary = primary

    def _folders(self) -> list[Path]:
        names = [self._primary]
        names += [s.study_name for s in self._storage.get_all_studies()]
        folders: list[Path] = []
        for name in dict.fromkeys(names):
            try:
                folder = artifact_dir(self._url, name)
            except ConfigError:  # a name blood-automl would not give has no folder of ours
                continue
            if folder.is_dir():
                folders.append(folder)
        return folders

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for folder in self._folders():
            try:
                return FileSystemArtifactStore(folder).open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in no study's artifact folder")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        artifact_store_for(self._url, self._primary).write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for folder in self._folders():
            try:
                FileSystemArtifactStore(folder).remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in no study's artifact folder")


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (``localhost``, 127.x, ::1)."""
    text = host.strip().strip("[]").lower()
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def dashboard_url(host: str, port: int) -> str:
    """The address to open in a browser; a wildcard bind (0.0.0.0, ::) is shown as loopback."""
    text = host.strip().strip("[]")
    if text in ("", "0.0.0.0"):
        text = "127.0.0.1"
    elif text == "::":
        text = "::1"
    if ":" in text:
        text = f"[{text}]"
    return f"http://{text}:{port}/dashboard"


def exposure_warning(host: str, port: int, storage_url: str | None) -> str | None:
    """The one-line warning for a dashboard bound beyond loopback, or None on loopback."""
    if is_loopback(host):
        return None
    return (
        f"warning: the dashboard listens on {host}:{port}, so anyone who can reach this "
        f"machine can read, edit and delete the studies in {mask_url(storage_url)} without a "
        f"password; use --host {DEFAULT_HOST} unless that is what you want"
    )


def run_dashboard(
    storage_url: str | None,
    study: str | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    quiet: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard on the storage until Ctrl-C (then return).

    The dashboard lists every study of the storage and shows their per-trial images
    (artifacts); ``study`` (default ``blood-automl``) must exist when given and receives
    artifacts uploaded from the dashboard. Bound to loopback by default; any other
    ``host`` prints a one-line warning on stderr. ``quiet`` hides the server's start-up
    lines and request log. ``on_ready`` is called with :func:`dashboard_url` once the
    address is known to be free, just before serving.

    Raises :class:`StorageError` when the storage or the given study does not exist or the
    port is already in use, :class:`ConfigError` for a bad host or port.
    """
    host = _check_host(host)
    port = _check_port(port)
    if study is not None:
        check_study_name(study)
    storage = open_existing_storage(storage_url)
    if study is not None:
        get_study(storage, study)  # a one-line StorageError naming the studies there
    store = StudiesArtifactStore(storage, storage_url, study or DEFAULT_STUDY)
    _check_free(host, port)
    warning = exposure_warning(host, port, storage_url)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if on_ready is not None:
        on_ready(dashboard_url(host, port))
    _serve(storage, store, host, port, quiet)


def _serve(
    storage: BaseStorage, store: StudiesArtifactStore, host: str, port: int, quiet: bool
) -> None:
    """What ``optuna_dashboard.run_server`` does, with bottle's ``quiet`` passed through."""
    try:
        serve_app(dashboard_app(storage, store), host, port, quiet)  # returns on Ctrl-C
    except OSError as e:  # the port was taken between the check and the start
        raise _bind_error(host, port, e) from None


def _check_host(host: str) -> str:
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"--host must be an address such as {DEFAULT_HOST}, but got {host!r}")
    return host.strip()


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a whole number in [1, 65535], but got {port!r}")
    return port


def _family(host: str) -> socket.AddressFamily:
    # as bottle's wsgiref server: IPv6 when the host has a colon, else IPv4
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_free(host: str, port: int) -> None:
    """Bind ``host:port`` once as the server will (address reuse on), to fail early and clearly."""
    family = _family(host)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(
            f"--host {host} is not an address of this machine ({e.strerror}); use "
            f"{DEFAULT_HOST}, or 0.0.0.0 to listen on every network interface"
        ) from None
    address = infos[0][4]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise _bind_error(host, port, e) from None


def _bind_error(host: str, port: int, e: OSError) -> StorageError:
    if e.errno == errno.EADDRINUSE:
        return StorageError(
            f"port {port} on {host} is already in use (another dashboard?); stop the program "
            f"using it or choose another --port (e.g. --port {_free_port(host)})"
        )
    if e.errno == errno.EACCES:
        return StorageError(
            f"not allowed to listen on port {port} (ports below 1024 need administrator "
            f"rights); choose --port {DEFAULT_PORT} or another port above 1023"
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return StorageError(
            f"--host {host} is not an address of this machine; use {DEFAULT_HOST}, or 0.0.0.0 "
            f"to listen on every network interface"
        )
    return StorageError(f"cannot listen on {host}:{port} ({e.strerror or e}); try another --port")


def _free_port(host: str) -> int:
    """A port the system says is free now (a suggestion for the error message)."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as s:
            s.bind((host.strip("[]"), 0))
            return int(s.getsockname()[1])
    except OSError:
        return DEFAULT_PORT + 1
