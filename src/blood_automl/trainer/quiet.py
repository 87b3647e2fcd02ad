"""Keeping TensorFlow's own logging (absl, oneDNN, CUDA lines on fd 2) off the terminal.

TensorFlow's C++ code writes to file descriptor 2 directly, some of it before
``TF_CPP_MIN_LOG_LEVEL`` is read, so redirecting Python's ``sys.stderr`` does not help:
the descriptor itself is pointed elsewhere (``os.dup2``). A trial's process sends both
its descriptors to its own log file for good (``search.logs``); the search's main process
and its workers only hide TensorFlow's import, and keep ``TF_CPP_MIN_LOG_LEVEL`` at 3 for
the rest. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Lines TensorFlow, absl and the CUDA / oneDNN libraries print on their own.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWEF]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: "
    r"|This TensorFlow binary is optimized)"
)
#: The routine part of that: start-up and information lines, not errors worth showing.
ROUTINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.]+:\d+\] "
    r"|E\d{4} .*failed call to cuInit"
    r"|To enable the following instructions: "
    r"|This TensorFlow binary is optimized)"
)
#: TensorFlow's C++ log level variable (0: all, 1: no info, 2: errors only, 3: none).
LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_ENV = "BLOOD_AUTOML_QUIET_TENSORFLOW"
#: The level a trial's log gets when the user did not choose one: warnings and errors.
TRIAL_LOG_LEVEL = "1"
#: How many lines of a failed trial's log are shown with the failure.
TAIL_LINES = 6


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def redirect_output(path: Path) -> Path | None:
    """Send this process's file descriptors 1 and 2 to ``path`` (created, truncated) for good.

    Returns the path, or None when the file cannot be made (then both go to the null
    device: a trial's output must never reach the terminal it shares with the display).
    """
    _flush()
    made: Path | None = path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        made, fd = None, os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return made


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Point fd 2 at a private temporary file inside the block, then restore it.

    What was written there is dropped, unless the block raises an error: then it is
    written to the real stderr, so a failing import still explains itself. A stop (Ctrl-C,
    SIGTERM) drops it too: it explains nothing.
    """
    _flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception:
            _flush()
            os.dup2(saved, 2)
            sink.seek(0)
            with contextlib.suppress(OSError):
                os.write(2, sink.read()[-20_000:])
            raise
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines hidden; its later C++ logging stays off."""
    if LEVEL_ENV not in os.environ:
        os.environ[LEVEL_ENV] = "3"
        os.environ[QUIET_ENV] = "1"  # a trial's process, writing to a file, may say more
    if "tensorflow" in sys.modules:
        return
    with native_stderr_hidden():
        import tensorflow  # noqa: F401


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a log, leaving out TensorFlow's routine start-up chatter."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64_000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip() and not ROUTINE.match(line)]
    return kept[-lines:]
