"""Safe output targets: check before any work, write beside the target, move into place atomically.

Every file or folder blood-automl writes for a user (an export, a report folder, a
prediction CSV, a contact sheet) goes through this module, with these rules:

* a target is checked with ``os.lstat`` before anything is opened, so a FIFO, a device, a
  socket or a symbolic link is refused (never opened, never replaced), and so is anything
  under ``/proc`` or ``/sys``;
* a file target may replace an existing *regular* file only with ``overwrite``;
* a folder target may be an empty folder, or, with ``overwrite``, a folder that blood-automl
  made for the same kind of output: it holds a marker file ``.blood-automl-<kind>`` (a small
  JSON with the kind and version). Any other folder is never replaced. The working directory,
  a parent of it and protected paths (a study's folder, its storage) are refused;
* output is written into a temporary sibling named
  ``.blood-automl-tmp.<name>.<host>-<pid>.<hex>`` and renamed into place when complete;
  temporaries left by a killed earlier run (older than this process, their process gone)
  are removed on the next write into the same folder;
* folders get mode 0755 and files 0644, whatever the umask, so others can read them.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from blood_automl import __version__
from blood_automl.errors import ConfigError

MARKER_PREFIX = ".blood-automl-"
"""A folder of ours holds ``.blood-automl-<kind>``, e.g. ``.blood-automl-export``."""
TEMP_PREFIX = ".blood-automl-tmp."
"""Temporaries beside a target: ``.blood-automl-tmp.<target name>.<host>-<pid>.<random hex>``."""
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
"""This machine in temporaries' names: a process id means something only on its own machine."""
KINDS = ("export", "report", "evaluation", "explanation")
DIR_MODE = 0o755
FILE_MODE = 0o644
_FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"))
_MARKER_MAX_BYTES = 4096
_OTHER_HOST_STALE_S = 86_400
_STARTED = time.time()
"""When this process imported the module: temporaries older than this may be stale."""


# -- checks ------------------------------------------------------------------------------------


def check_output_file(
    target: str | Path,
    *,
    overwrite: bool,
    option: str = "--out",
    example: str = "predictions.csv",
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Refuse a file target that must not be written; return it as a Path.

    Allowed: a path that does not exist (in a folder that exists or can be made), or with
    ``overwrite`` an existing regular file of the output's type (its suffix is that of
    ``example``: a ``thesis.tex`` or a ``studies.db`` is never replaced by a CSV). ``inputs``
    are files the command reads; the target may not be one of them. Raises
    :class:`ConfigError` (one line) otherwise.
    """
    path = Path(target)
    shown = f"{option} {target}"
    _check_not_special_root(path, shown, f"give a file name such as {example}")
    info = _lstat(path)
    if info is None:
        _check_parent(path, shown)
        return path
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{shown} is a folder, not a file; give a file name such as {example} "
            f"(e.g. {option} {Path(target) / example})"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"{shown} is {_describe(path, info)}, not a regular file, so it is never written "
            f"or replaced; give a file name such as {example}"
        )
    for given in inputs:
        if _same_file(path, Path(given)):
            raise ConfigError(
                f"{shown} is the input {given} itself, which would be replaced by the output; "
                f"choose another {option}"
            )
    wanted = Path(example).suffix
    if path.suffix.lower() != wanted:
        raise ConfigError(
            f"{shown} exists and is not a {wanted} file, so it is never replaced by this "
            f"output, --overwrite or not; choose another {option} (e.g. {example})"
        )
    if not overwrite:
        raise ConfigError(
            f"{target} exists; pass --overwrite to replace it or choose another {option}"
        )
    return path


def check_output_dir(
    target: str | Path,
    kind: str,
    *,
    overwrite: bool,
    option: str = "--out",
    protected: Sequence[str | Path] = (),
) -> Path:
    """Refuse a folder target that must not be written or replaced; return it as a Path.

    Allowed: a path that does not exist (in a folder that exists or can be made), an empty
    folder, or with ``overwrite`` a folder holding this tool's marker of the same ``kind``.
    ``protected`` are paths (a study's folder, its storage file) that the target may not
    lie in or contain. Raises :class:`ConfigError` (one line) otherwise.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    path = Path(target)
    shown = f"{option} {target}"
    _check_not_special_root(path, shown, f"choose a folder of your own for {option}")
    _check_not_working_dir(path, shown, option)
    _check_protected(path, shown, option, protected)
    info = _lstat(path)
    if info is None:
        _check_parent(path, shown)
        return path
    if not stat.S_ISDIR(info.st_mode):
        what = "a file" if stat.S_ISREG(info.st_mode) else _describe(path, info)
        raise ConfigError(
            f"{shown} is {what}, not a folder, so it is never replaced; choose another {option} "
            f"(a folder name that does not exist yet)"
        )
    if not _writable(path):
        raise ConfigError(f"{shown} is a folder you cannot write to; choose another {option}")
    if _is_empty(path, shown, option):
        return path
    found = read_marker(path)
    if found is None:
        raise ConfigError(
            f"{shown} already exists and blood-automl did not make it (it holds no "
            f"{MARKER_PREFIX}{kind} marker), so it is never replaced, --overwrite or not; "
            f"choose another {option}, or remove {target} yourself"
        )
    if found != kind:
        raise ConfigError(
            f"{shown} holds a blood-automl {found}, not {_a(kind)}, so it is not replaced; "
            f"choose another {option}"
        )
    if not overwrite:
        raise ConfigError(
            f"the {kind} folder {target} already exists and is not empty; pass --overwrite "
            f"to replace that earlier {kind}, or choose another {option}"
        )
    return path


def read_marker(folder: Path) -> str | None:
    """The kind named by the (single, regular, small, valid) marker in ``folder``, else None."""
    found: list[str] = []
    for kind in KINDS:
        marker = folder / f"{MARKER_PREFIX}{kind}"
        info = _lstat(marker)
        if info is None:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_MAX_BYTES:
            return None
        try:
            content = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(content, dict) or content.get("kind") != kind:
            return None
        found.append(kind)
    return found[0] if len(found) == 1 else None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _check_not_special_root(path: Path, shown: str, fix: str) -> None:
    for candidate in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for root in _FORBIDDEN_ROOTS:
            if candidate == root or candidate.is_relative_to(root):
                raise ConfigError(f"{shown} lies under {root}, a system folder; {fix}")


def _check_not_working_dir(path: Path, shown: str, option: str) -> None:
    real = Path(os.path.realpath(path))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd:
        raise ConfigError(
            f"{shown} is the working directory itself, which is never replaced; give a new "
            f"folder name, e.g. {option} {Path(path) / 'out'}"
        )
    if cwd.is_relative_to(real):
        raise ConfigError(
            f"{shown} is a parent of the working directory, which is never replaced; give a "
            f"new folder name for {option}"
        )


def overlaps(path: str | Path, other: str | Path) -> bool:
    """Whether ``path`` is ``other``, lies in it or holds it (links resolved)."""
    real, guarded = Path(os.path.realpath(path)), Path(os.path.realpath(other))
    return real == guarded or real.is_relative_to(guarded) or guarded.is_relative_to(real)


def check_apart(target: Path, inputs: Sequence[Path], command: str, example: Path) -> None:
    """Refuse an output folder that is, lies in or holds one of the command's ``inputs``."""
    for given in inputs:
        if overlaps(target, given):
            raise ConfigError(
                f"--out {target} overlaps {given}, which {command} reads; choose another --out "
                f"(e.g. {example})"
            )


def _check_protected(path: Path, shown: str, option: str, protected: Sequence[str | Path]) -> None:
    for item in protected:
        if overlaps(path, item):
            raise ConfigError(
                f"{shown} overlaps {item}, which belongs to the study (its data or storage); "
                f"choose another {option} outside it"
            )


def _check_parent(path: Path, shown: str) -> None:
    """The nearest existing folder above ``path`` must be a folder we may write into."""
    parent = Path(os.path.abspath(path)).parent
    while True:
        try:
            info = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:
                raise ConfigError(
                    f"{shown}: no folder above it exists; choose another path"
                ) from None
            parent = parent.parent
            continue
        except OSError as e:
            raise ConfigError(
                f"{shown}: its folder {parent} cannot be read ({e.strerror}); choose another path"
            ) from None
        break
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{shown}: {parent} is not a folder, so nothing can be written under it; "
            f"choose another path"
        )
    if not _writable(parent):
        raise ConfigError(f"{shown}: the folder {parent} is not writable; choose another path")


def _is_empty(folder: Path, shown: str, option: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return not any(True for _ in entries)
    except OSError as e:
        raise ConfigError(
            f"{shown} cannot be listed ({e.strerror}); choose another {option}"
        ) from None


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # a parent is a file: _check_parent says so
    except OSError as e:
        raise ConfigError(
            f"{path} cannot be examined ({e.strerror}); choose another path"
        ) from None


def _type_name(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def _describe(path: Path, info: os.stat_result) -> str:
    """``a FIFO (named pipe)``, ``a device``, ``a symbolic link (to /dev/null)``..."""
    if not stat.S_ISLNK(info.st_mode):
        return _type_name(info.st_mode)
    try:
        return f"a symbolic link (to {os.readlink(path)})"
    except OSError:
        return "a symbolic link"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- writing -----------------------------------------------------------------------------------


def write_file(
    target: str | Path,
    write: Callable[[IO[Any]], None],
    *,
    overwrite: bool,
    binary: bool = False,
    option: str = "--out",
    example: str = "predictions.csv",
) -> Path:
    """Check ``target``, let ``write`` fill a temporary file beside it, then move it into place.

    The file gets mode 0644. A failure leaves ``target`` as it was.
    """
    path = check_output_file(target, overwrite=overwrite, option=option, example=example)
    parent = _make_parent(path)
    remove_stale_temporaries(parent)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        mode = "wb" if binary else "w"
        kwargs: dict[str, Any] = {} if binary else {"newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as f:
            write(f)
        check_output_file(path, overwrite=overwrite, option=option, example=example)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_dir(
    target: str | Path,
    kind: str,
    fill: Callable[[Path], None],
    *,
    overwrite: bool,
    option: str = "--out",
    protected: Sequence[str | Path] = (),
) -> Path:
    """Check ``target``, let ``fill`` write a temporary folder beside it, then move it into place.

    The folder gets the ``kind`` marker, mode 0755 (its files 0644). A failure leaves
    ``target`` as it was and removes the temporary.
    """
    path = check_output_dir(target, kind, overwrite=overwrite, option=option, protected=protected)
    tmp = _temporary_dir(path)
    try:
        fill(tmp)
        write_marker(tmp, kind)
        set_modes(tmp)
        check_output_dir(path, kind, overwrite=overwrite, option=option, protected=protected)
        _move_into_place(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def create_dir(target: Path, fill: Callable[[Path], None], *, done: Callable[[Path], bool]) -> bool:
    """Make a folder once: ``fill`` a temporary beside ``target``, then rename it into place.

    For folders the program itself keeps (a study's prepared data), which are made once
    and never replaced: when another process made ``target`` first (``done(target)`` is
    then true), this one's work is dropped and False returned. An empty ``target`` counts
    as absent. A failure or a stop removes the temporary and leaves ``target`` as it was;
    temporaries of processes that died are removed first.
    """
    tmp = _temporary_dir(target)
    try:
        fill(tmp)
        with contextlib.suppress(OSError):  # an empty folder there (made by hand): ours now
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
        try:
            os.rename(tmp, target)
        except OSError:
            if done(target):
                return False
            raise
    finally:
        _remove(tmp)
    return True


def _temporary_dir(target: Path) -> Path:
    """A new temporary folder beside ``target`` (its parents made, dead processes' removed)."""
    parent = _make_parent(target)
    remove_stale_temporaries(parent)
    tmp = _temp_name(target)
    tmp.mkdir(mode=DIR_MODE)
    return tmp


def write_marker(folder: Path, kind: str) -> Path:
    """Write ``.blood-automl-<kind>`` into ``folder``: the kind, the version, when."""
    marker = folder / f"{MARKER_PREFIX}{kind}"
    content = {
        "kind": kind,
        "tool": "blood-automl",
        "version": __version__,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    marker.write_text(json.dumps(content) + "\n", encoding="utf-8")
    return marker


def set_modes(folder: Path) -> None:
    """Folders 0755 and files 0644 under (and including) ``folder``; links are left alone."""
    os.chmod(folder, DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, FILE_MODE)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove our temporaries in ``folder`` left by processes that are gone; return them.

    A temporary is ours by its name (``.blood-automl-tmp.<name>.<host>-<pid>.<hex>``). One of
    this machine is stale when it is older than this process and its process no longer runs;
    one of another machine sharing the folder, when it is older than a day.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        maker = _temp_maker(entry.name)
        if maker is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) or not _stale(maker, info.st_mtime):
            continue
        _remove(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def _stale(maker: tuple[str, int], mtime: float) -> bool:
    host, pid = maker
    if host != HOST_TAG:
        return mtime < time.time() - _OTHER_HOST_STALE_S
    return mtime < _STARTED and pid != os.getpid() and not _alive(pid)


def _temp_name(path: Path) -> Path:
    name = path.name[:100]  # the whole name stays within the 255 bytes a file name may have
    maker = f"{HOST_TAG}-{os.getpid()}"
    return path.parent / f"{TEMP_PREFIX}{name}.{maker}.{secrets.token_hex(4)}"


def _temp_maker(name: str) -> tuple[str, int] | None:
    """(host tag, pid) of one of our temporaries, or None for any other name."""
    if not name.startswith(TEMP_PREFIX):
        return None
    parts = name[len(TEMP_PREFIX) :].rsplit(".", 2)
    if len(parts) != 3 or len(parts[2]) != 8:
        return None
    host, _, pid = parts[1].partition("-")
    if len(host) != len(HOST_TAG) or not pid.isdigit():
        return None
    return host, int(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _make_parent(path: Path) -> Path:
    """Create the missing folders above ``path`` with mode 0755 (whatever the umask)."""
    parent = Path(os.path.abspath(path)).parent
    missing = [p for p in [parent, *parent.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(folder, DIR_MODE)
    return parent


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing (checked) folder there is swapped out, then removed."""
    if _lstat(path) is None:
        os.rename(tmp, path)
        return
    old = _temp_name(path)
    try:
        os.rename(path, old)
    except OSError as e:
        raise ConfigError(
            f"{path} cannot be replaced ({e.strerror}); choose another path"
        ) from None
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    info = _lstat(path)
    if info is None:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- CSV cells ---------------------------------------------------------------------------------

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run as a formula: ``'`` before =, +, -, @, tab, CR."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
