"""The hostile-input harness: run the real CLI on a bad input, check one error line, exit 1, nothing written."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from blood_automl.studies import open_storage
from conftest import make_images

CLASS_NAMES = [
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
]
SECRET = "secret"
"""The password in every storage URL below; it must never be printed."""
PWNED = "PWNED"
"""The file a smuggled ``os.system('touch PWNED')`` would create in the working directory."""
HAS_PSYCOPG2 = importlib.util.find_spec("psycopg2") is not None

# About three minutes in all (a real one-trial search, then one CLI process per case), so
# the whole module is slow; without the search's two cases the rest takes about 1.5 minutes.
pytestmark = pytest.mark.slow

# TensorFlow's C++ start-up lines (absl logging ignores TF_CPP_MIN_LOG_LEVEL for these):
# the only lines besides the error a failing command may print, and only when it had to
# import TensorFlow before it could find the problem.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: )"
)


# -- running the CLI and watching the disk -------------------------------------------------


def run_cli(
    argv: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``blood-automl ARGV`` in a fresh process: no stdin, quiet TensorFlow."""
    return subprocess.run(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=cwd,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


Snapshot = dict[str, tuple[Any, ...]]


class WroteOnDisk(AssertionError):
    """A command that refused its input still created, changed or removed something."""


def snapshot(roots: list[Path]) -> Snapshot:
    """Every folder and file under ``roots``: folders by name, files by size, mtime and sha256."""
    seen: Snapshot = {}
    for k, root in enumerate(roots):
        for path in sorted(root.rglob("*")):
            key = f"{k}:{path.relative_to(root).as_posix()}"
            if path.is_dir() and not path.is_symlink():
                seen[key] = ("folder",)
                continue
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 64 << 20 else ""
            seen[key] = ("file", st.st_size, st.st_mtime_ns, digest)
    return seen


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """What appeared, vanished or changed between two snapshots."""
    out = [f"new: {k}" for k in sorted(after.keys() - before.keys())]
    out += [f"gone: {k}" for k in sorted(before.keys() - after.keys())]
    out += [f"changed: {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- what the fixtures in conftest.py give -------------------------------------------------


@dataclass(frozen=True)
class Searched:
    """A study made by a real ``blood-automl search`` (one completed smoke trial)."""

    folder: Path
    url: str
    study: str


@dataclass(frozen=True)
class Models:
    """Small exported-model folders: ``good`` (a real model), ``lambda`` (code in it), ``junk``."""

    folder: Path
    lambda_marker: Path


class Ctx:
    """What a case's setup builds on: its folder, the shared fixtures, what must never appear."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self.request = request
        self.roots: list[Path] = [tmp]
        self.never: list[Path] = [tmp / PWNED]
        self.env: dict[str, str] = {}  # extra environment variables for the command

    def searched(self) -> Searched:
        """The real searched study; its folder is watched too (nothing there may change)."""
        found: Searched = self.request.getfixturevalue("searched")
        self.roots.append(found.folder)
        return found

    def export(self, kind: str) -> str:
        """A copy of a model folder of :class:`Models` in this case's folder."""
        found: Models = self.request.getfixturevalue("models")
        self.never.append(found.lambda_marker)
        target = self.tmp / kind
        target.mkdir()
        for f in (found.folder / kind).iterdir():
            (target / f.name).write_bytes(f.read_bytes())
        return kind

    def npz(self, name: str, **arrays: Any) -> str:
        """Save ``arrays`` as ``name`` (an .npz) in the case's folder."""
        np.savez(self.tmp / name, **arrays)
        return name

    def text(self, name: str, content: str) -> str:
        """Write a text file in the case's folder (parents created)."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return name

    def good_npz(self, name: str = "data.npz", size: int = 96) -> str:
        """A valid little data set (the input is fine; something else is wrong)."""
        images, labels = make_images(48, size=size)
        return self.npz(name, images=images, labels=labels)

    def store(self, study: str | None = None, *, plain: bool = False) -> str:
        """An existing study storage at ``store/studies.db`` (optionally one study, one failed trial).

        Made by blood-automl's own ``open_storage`` (SQLite in WAL mode, as search makes it),
        or with ``plain`` by Optuna alone (the default rollback journal).
        """
        path = self.tmp / "store" / "studies.db"
        path.parent.mkdir(exist_ok=True)
        url = f"sqlite:///{path}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(url) if plain else open_storage(url, heartbeat=False)
        if study is not None:
            made = optuna.create_study(storage=storage, study_name=study, direction="maximize")
            trial = made.ask()
            made.tell(trial, state=optuna.trial.TrialState.FAIL)
        assert isinstance(storage, optuna.storages.RDBStorage)
        storage.engine.dispose()  # last connection closed: no -wal or -shm file stays behind
        return url


Setup = Callable[[Ctx], list[str]]


Check = Callable[[Ctx, subprocess.CompletedProcess[str]], None]


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, what the error must name and the fix it must give.

    By default the command must write nothing at all under the watched folders. A case whose
    command is allowed to leave something (a search that trained before its disk failed must
    keep what it trained) sets ``writes`` and says what must hold in ``check``.
    """

    id: str
    setup: Setup
    what: str
    fix: str
    xfail: str | None = None
    needs_psycopg2: bool = False
    writes: bool = False
    check: Check | None = None
    timeout: float = 300
    root: bool = False  # the case only means something for root (e.g. writing to /dev)


def param(case: Case) -> Any:
    """``case`` as a pytest parameter, with its marks."""
    marks: list[Any] = []
    if case.xfail is not None:
        marks.append(pytest.mark.xfail(raises=WroteOnDisk, strict=True, reason=case.xfail))
    if case.needs_psycopg2:
        marks.append(pytest.mark.skipif(not HAS_PSYCOPG2, reason="psycopg2 is not installed"))
    if case.root:
        marks.append(pytest.mark.skipif(os.geteuid() != 0, reason="needs root"))
    return pytest.param(case, id=case.id, marks=marks)


def run_case(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Set ``case`` up, run the CLI once, and check: exit 1, one error line, nothing written."""
    ctx = Ctx(tmp_path, request)
    argv = case.setup(ctx)
    before = snapshot(ctx.roots)

    result = run_cli(argv, cwd=tmp_path, timeout=case.timeout, env=ctx.env)

    shown = f"argv: {argv}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, shown
    assert "Traceback" not in result.stderr, shown
    if not case.writes:
        assert result.stdout.strip() == "", shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, shown
    assert [line for line in lines if line not in errors and not _TF_NOISE.match(line)] == [], shown
    line = errors[0]
    assert case.what in line, shown
    assert case.fix in line, shown
    assert SECRET not in result.stderr + result.stdout, shown
    for path in ctx.never:
        assert not path.exists(), f"{path} appeared: something from the input was executed"
    if case.check is not None:
        case.check(ctx, result)
    if not case.writes:
        changed = differences(before, snapshot(ctx.roots))
        if changed:
            raise WroteOnDisk(f"{'; '.join(changed)}\n{shown}")
