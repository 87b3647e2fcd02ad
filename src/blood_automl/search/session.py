"""Running a search from its options: setting up, one process or a pool of workers, the summary."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace

from rich.console import Console

from blood_automl.search.options import SearchOptions, check_options
from blood_automl.search.progress import SearchProgress, top_table
from blood_automl.search.run import SearchResult, SearchStopped, setup_search, work
from blood_automl.signals import stop_signals
from blood_automl.studies import mask_url


@contextlib.contextmanager
def stop_while_setting_up() -> Iterator[None]:
    """SIGINT or SIGTERM before the first trial: a clean stop (exit code 130), nothing counted.

    Preparing the data stops on its own (its temporary folder removed); a stop while
    TensorFlow loads, weights are checked or the study is opened ends here. The trial
    loop installs its own handlers, which record the running trial as interrupted.
    """
    try:
        with stop_signals():
            yield
    except KeyboardInterrupt:
        raise SearchStopped(
            "search stopped by the user while setting up, before any trial ran; nothing was "
            "counted; run the same command again to start",
            exit_code=130,
        ) from None


def run_search(options: SearchOptions, console: Console | None = None) -> SearchResult:
    """Run (or resume) a search until the study has ``options.trials`` finished trials.

    Every option is checked first (before TensorFlow is imported or anything written);
    options left out take the study's stored values when it is resumed. With ``workers``
    > 1 the trials run in that many worker processes (one GPU each where there are GPUs).
    Raises :class:`SearchStopped` when interrupted (SIGINT or SIGTERM; the running trials
    are marked interrupted, not counted, and the study stays consistent), when
    ``max_failures`` trials fail in a row, or when the disk, store, weights or data fail.
    """
    console = console or Console()
    check_options(options)
    if options.workers is None or options.workers > 1:
        from blood_automl.search.workers import default_workers, run_parallel

        with stop_while_setting_up():  # default_workers may load TensorFlow to count GPUs
            n = options.workers or default_workers()
            if n > 1:
                return run_parallel(replace(options, workers=n), console)
    with stop_while_setting_up():
        setup = setup_search(options)
    for note in setup.notes:
        console.print(note, style="dim", markup=False, highlight=False)
    with SearchProgress(
        setup.study, setup.options.trials, setup.options.objective, console
    ) as progress:
        ran = work(setup.options, setup, progress)
    return SearchResult.of(setup, ran)


def print_summary(result: SearchResult, options: SearchOptions, console: Console) -> None:
    """The end of a search: counts, the top-5 table and the next command."""
    options = result.options or options
    c = result.counts
    console.print(
        f"study '{result.study.study_name}': {c['finished']} finished "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed); this run: {result.ran}"
    )
    if result.top:
        console.print(top_table(result.study, options.objective))
        nxt = ["blood-automl", "refit-best", "--study", options.study]
        if options.storage:
            nxt += ["--storage", mask_url(options.storage)]
        # one line, never wrapped or read as markup: it is a command to copy
        console.print("next: " + " ".join(nxt), soft_wrap=True, markup=False, highlight=False)
    elif sys.stdout.isatty():
        console.print("no trial completed yet")
