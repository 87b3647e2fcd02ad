"""Parallel workers on one machine: N processes on one study, one GPU each, threads split on a CPU."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from typing import Any, TypeAlias

from rich.console import Console

from blood_automl.errors import BloodAutoMLError
from blood_automl.search.objective import one_line
from blood_automl.search.progress import SearchProgress
from blood_automl.search.run import (
    SearchOptions,
    SearchResult,
    SearchStopped,
    setup_search,
    stop_signals,
    stopped_by_user,
    work,
)
from blood_automl.studies import logs_dir
from blood_automl.trainer.quiet import import_tensorflow_quietly, redirect_output

Message: TypeAlias = tuple[str, int, Any]
"""What a worker sends back: (kind, worker index, value): done / interrupted / stopped / error."""
Messages: TypeAlias = "mp.Queue[Message]"

_STOP_GRACE = 120.0  # seconds a worker gets to record its interrupted trial


def default_workers() -> int:
    """One worker per visible GPU; one on a machine without GPUs."""
    import_tensorflow_quietly()
    from blood_automl import trainer

    return max(1, trainer.visible_gpus())


def worker_environment(index: int, gpus: int) -> dict[str, str]:
    """Environment of worker ``index``: its own GPU where there are GPUs, else its thread share."""
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    return env


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as ``taskset`` sets it), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity on this system
        return max(1, os.cpu_count() or 1)


def threads_per_worker(n_workers: int, gpus: int, cpus: int | None = None) -> int | None:
    """TensorFlow threads for each worker: the usable cores split evenly on a CPU; TF's own
    choice with GPUs."""
    if gpus:
        return None
    return max(1, (cpus or usable_cpus()) // n_workers)


def _child(options: SearchOptions, index: int, env: dict[str, str], messages: Messages) -> None:
    os.environ.update(env)  # before TensorFlow is imported in this process
    # The worker shares the terminal with the live display: what it (or TensorFlow in it)
    # prints goes to studies/<study>/logs/worker-<index>.log; results travel by ``messages``.
    redirect_output(logs_dir(options.storage, options.study) / f"worker-{index}.log")
    try:
        setup = setup_search(options, worker=index)
        messages.put(("done", index, work(options, setup)))
    except SearchStopped as exc:
        kind = "interrupted" if exc.exit_code == 130 else "stopped"
        messages.put((kind, index, str(exc)))
    except KeyboardInterrupt:
        messages.put(("interrupted", index, ""))
    except BloodAutoMLError as exc:
        messages.put(("error", index, str(exc)))
    except BaseException as exc:
        messages.put(("error", index, one_line(exc)))


def run_parallel(options: SearchOptions, console: Console) -> SearchResult:
    """Prepare the study once, then run ``options.workers`` worker processes on it to the target."""
    import_tensorflow_quietly()
    from blood_automl import trainer

    n = int(options.workers or 1)
    gpus = trainer.visible_gpus()
    trainer.hide_gpus()  # the coordinating process trains nothing: it keeps off the workers' GPUs
    setup = setup_search(replace(options, workers=1))
    for note in setup.notes:
        console.print(note, style="dim", markup=False, highlight=False)
    threads = threads_per_worker(n, gpus)
    console.print(
        f"[dim]{n} workers"
        + (f", one GPU each ({gpus} visible)" if gpus else f", {threads} CPU thread(s) each")
        + "[/dim]"
    )
    child_options = replace(setup.options, data=None, workers=1, threads=threads)
    ctx = mp.get_context("spawn")
    messages: Messages = ctx.Queue()
    procs: list[BaseProcess] = [
        ctx.Process(
            target=_child,
            args=(child_options, i, worker_environment(i, gpus), messages),
            name=f"blood-automl-worker-{i}",
        )
        for i in range(n)
    ]
    results: dict[int, tuple[str, Any]] = {}
    interrupted = False
    try:
        for p in procs:
            p.start()
        with (
            SearchProgress(setup.study, options.trials, options.objective, console) as progress,
            stop_signals(),
        ):
            try:
                while any(p.is_alive() for p in procs):
                    _drain(messages, results)
                    progress.poll()
                    if _failed(results):  # one worker stopped on an error: stop them all
                        _stop(procs)
                        break
                    time.sleep(1.0)
            except KeyboardInterrupt:
                interrupted = True
                _stop(procs)
            progress.poll()
    finally:
        _stop(procs)
    _drain(messages, results)
    errors = [
        f"worker {i}: {text}"
        for i, (kind, text) in sorted(results.items())
        if kind in ("error", "stopped")
    ]
    missing = [
        p.name
        for p in procs
        if p.exitcode not in (0, None) and p.pid is not None and _index(p) not in results
    ]
    errors += [f"{name} died (exit code {_exit(procs, name)})" for name in missing]
    kinds = {kind for kind, _ in results.values()}
    if interrupted or ("interrupted" in kinds and not _failed(results)):
        raise stopped_by_user(setup.study, options)
    if errors:
        raise SearchStopped("; ".join(errors))
    ran = sum(int(v) for kind, v in results.values() if kind == "done")
    return SearchResult.of(setup, ran)


def _failed(results: dict[int, tuple[str, Any]]) -> bool:
    """True once a worker stopped on an error (environment, failures in a row, its setup)."""
    return any(kind in ("error", "stopped") for kind, _ in results.values())


def _index(p: BaseProcess) -> int:
    return int(str(p.name).rsplit("-", 1)[-1])


def _exit(procs: list[BaseProcess], name: str) -> int | None:
    return next(p.exitcode for p in procs if p.name == name)


def _drain(messages: Messages, results: dict[int, tuple[str, Any]]) -> None:
    while True:
        try:
            kind, index, value = messages.get_nowait()
        except queue.Empty:
            return
        results[int(index)] = (kind, value)


def _stop(procs: list[BaseProcess]) -> None:
    """SIGTERM every live worker (each marks its running trial interrupted), then wait; kill stragglers."""
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    for p in procs:
        if p.pid is not None:
            p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(5)
