"""Stopping on SIGINT and SIGTERM: one exception in the main thread, once, never lost in a finalizer."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_FINALIZER_FILES = frozenset({"weakref.py", "_weakrefset.py"})


def _in_finalizer(frame: FrameType | None) -> bool:
    """True in code whose exceptions Python prints and ignores: a weakref callback, a ``__del__``."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or os.path.basename(code.co_filename) in _FINALIZER_FILES:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def raise_on_stop(error: Callable[[signal.Signals], BaseException]) -> Iterator[None]:
    """Inside the block, the first SIGINT or SIGTERM raises ``error(signal)`` in the main thread.

    Later signals are ignored, so what the exception unwinds (recording a trial as
    interrupted, removing a temporary folder) can finish. A signal that arrives while a
    weakref callback or a ``__del__`` runs (garbage collection) is delivered again just
    after: Python ignores exceptions raised there, so the stop would be lost, and with it
    every later signal. Outside the main thread signals are left alone.
    """
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        if _in_finalizer(frame):  # send it again in a moment, once out of the finalizer
            resend = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            resend.daemon = True
            resend.start()
            return
        stopping = True
        if _HELD.active:  # in bookkeeping that must not be cut (see stops_held)
            _HELD.stop = error(signal.Signals(signum))
            return
        raise error(signal.Signals(signum))

    with _handled(handler):
        yield


class _Held:
    """Whether stops are held back now (:func:`stops_held`), and the one held."""

    active: bool = False
    stop: BaseException | None = None


_HELD = _Held()


@contextlib.contextmanager
def stops_held() -> Iterator[None]:
    """Inside the block a stop of :func:`raise_on_stop` is held, not raised, except in
    :func:`stops_allowed` blocks, where a held stop is raised at once.

    For loops whose bookkeeping between the interruptible parts must not be cut in the
    middle: Optuna creating a trial (RUNNING) before the objective runs, or recording its
    end after, would otherwise leave a trial RUNNING that no one runs. A stop held when the
    block ends normally is raised there; when an exception leaves the block, that exception
    goes on and the held stop is dropped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; other threads must not touch its state
        return
    before = _HELD.active
    _HELD.active = True
    try:
        yield
    except BaseException:
        _HELD.active = before
        if not before:
            _HELD.stop = None
        raise
    _HELD.active = before
    if not before:
        _raise_held()


@contextlib.contextmanager
def stops_allowed() -> Iterator[None]:
    """Inside a :func:`stops_held` block: a held stop is raised here, a new one at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _HELD.active
    _HELD.active = False
    try:
        _raise_held()
        yield
    finally:
        _HELD.active = before


def _raise_held() -> None:
    held, _HELD.stop = _HELD.stop, None
    if held is not None:
        raise held


def stop_signals() -> contextlib.AbstractContextManager[None]:
    """SIGINT and SIGTERM both stop the work once, as KeyboardInterrupt in the main thread.

    Later signals are ignored, so the trial being stopped can still be recorded as
    interrupted and the storage left consistent (see :func:`raise_on_stop`).
    """
    return raise_on_stop(lambda _signal: KeyboardInterrupt())


@contextlib.contextmanager
def exit_on_stop(message: str) -> Iterator[None]:
    """Inside the block, SIGINT or SIGTERM writes ``error: <message>`` and exits 130 at once.

    For the moments before anything is written (importing TensorFlow, the search): an
    exception raised there would unwind through the import machinery and whatever
    finalizers run, and could end as a death by signal instead of one line and exit 130.
    The line goes to the standard error the block started with, even when TensorFlow's
    start-up output is being hidden at that moment. Outside the main thread signals are
    left alone.
    """
    terminal = os.dup(2)

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.write(terminal, f"error: {message} ({name})\n".encode())
        os._exit(130)

    try:
        with _handled(handler):
            yield
    finally:
        os.close(terminal)


@contextlib.contextmanager
def _handled(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` answers SIGINT and SIGTERM inside the block; the previous ones after it.

    Outside the main thread signals are left alone.
    """
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
