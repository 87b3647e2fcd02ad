"""The search job: prepare data, choose the space, open the study, enqueue recipes, run trials to the target."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from blood_automl.data import PreparedData, load_prepared, prepare_data
from blood_automl.errors import BloodAutoMLError, ConfigError, DataError
from blood_automl.search.objective import (
    FAIL_REASON,
    INTERRUPTED,
    Interrupted,
    SearchContext,
    make_objective,
)
from blood_automl.search.progress import SearchProgress, top_table
from blood_automl.spaces import Choices, Fixed, Space, applicable_recipes, load_space
from blood_automl.studies import (
    DEFAULT_STUDY,
    StudySettings,
    artifact_dir,
    artifact_store_for,
    check_shared_url,
    create_or_load_study,
    get_study,
    list_studies,
    mask_url,
    open_storage,
    optimize_to_target,
    remaining_trials,
    save_study_note,
    study_counts,
    summarize,
)

SPACE_ATTR = "space"
RECIPE_ATTR = "recipe"


class SearchStopped(BloodAutoMLError):
    """The search stopped before its target: interrupted, or too many failures in a row."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``blood-automl search`` takes; defaults are the CLI's."""

    data: str | None = None
    trials: int = 100
    timeout: float | None = None
    study: str = DEFAULT_STUDY
    storage: str | None = None
    preset: str | None = None
    space: str | None = None
    weights: str = "imagenet"
    image_size: int = 96
    objective: str = "accuracy"
    recipes: bool = True
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "hyperband"
    clean: bool = True
    convert: bool = False
    max_failures: int = 5
    patience: int = 3
    # Worker processes on this machine (None: one per GPU, or one without GPUs) and the
    # TensorFlow threads of each (None: all cores shared).
    workers: int | None = 1
    threads: int | None = None
    # Train each trial in a fresh process (bounded memory over hundreds of trials).
    isolate: bool = True


@dataclass
class SearchResult:
    """What a finished search run did."""

    study: optuna.Study
    ran: int
    counts: dict[str, int]
    top: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, setup: SearchSetup, ran: int) -> SearchResult:
        """The result of a search on ``setup`` in which this run ran ``ran`` trials."""
        return cls(
            study=setup.study,
            ran=ran,
            counts=study_counts(setup.study),
            top=summarize(setup.study, top=5),
            notes=setup.notes,
        )


def study_dir(storage_url: str | None, study: str) -> Path:
    """The study's own folder (``studies/<study>`` by default): prepared data, artifacts."""
    return artifact_dir(storage_url, study).parent


def _hardware_preset(notes: list[str]) -> str:
    from blood_automl.trainer import configure

    gpus = configure().gpus
    preset = "gpu" if gpus else "cpu"
    notes.append(
        f"preset {preset}: TensorFlow sees {gpus} GPU(s)"
        + ("" if gpus else " (use --preset gpu to search the full space anyway)")
    )
    return preset


def _choose_space(options: SearchOptions, stored: dict[str, Any] | None, notes: list[str]) -> Space:
    if options.space and options.preset:
        raise ConfigError("give --preset or --space, not both (a space file names its base preset)")
    if options.space:
        return load_space(Path(options.space))
    if options.preset:
        return load_space(options.preset)
    if stored is not None:
        space = Space.from_dict(stored, source="the study's stored space")
        notes.append(f"space {space.name} (version {space.version}) from the study")
        return space
    return load_space(_hardware_preset(notes))


def _prepare(options: SearchOptions, folder: Path, notes: list[str]) -> PreparedData:
    data_dir = folder / "data"
    if options.data is None:
        if not (data_dir / "manifest.json").is_file():
            raise DataError(
                f"no --data given and study '{options.study}' has no prepared data in {data_dir}; "
                "pass --data PATH (an .npz, a folder of class folders, or bloodmnist)"
            )
        data = load_prepared(data_dir)
        notes.append(f"data: the study's prepared data in {data_dir}")
    else:
        data = prepare_data(
            options.data,
            data_dir,
            image_size=options.image_size,
            clean=options.clean,
            convert=options.convert,
            seed=options.seed,
        )
    if data.image_size != options.image_size and options.data is not None:
        raise DataError(
            f"prepared data is {data.image_size}px but --image-size is {options.image_size}"
        )
    return data


def _max_epochs(space: Space) -> int:
    """The most epochs (both phases) a trial of ``space`` can train: Hyperband's budget."""

    def high(name: str) -> int:
        domain = space[name]
        if isinstance(domain, Fixed):
            return int(domain.value)
        if isinstance(domain, Choices):
            return int(max(domain.options))
        return int(domain.high)

    return high("head_epochs") + high("finetune_epochs")


class FailureStreak:
    """Optuna callback: stop the study after ``limit`` failed trials in a row, keeping the reasons."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reasons: list[str] = []
        self.tripped = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "surplus" in trial.user_attrs or INTERRUPTED in trial.user_attrs:
            return
        if trial.state == TrialState.FAIL:
            self.reasons.append(
                f"trial {trial.number}: {trial.user_attrs.get(FAIL_REASON, 'unknown')}"
            )
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.reasons.clear()
        if self.limit and len(self.reasons) >= self.limit:
            self.tripped = True
            study.stop()


def _enqueue_recipes(study: optuna.Study, space: Space, notes: list[str], room: int) -> None:
    done = {t.user_attrs.get(RECIPE_ATTR) for t in study.get_trials(deepcopy=False)}
    recipes = applicable_recipes(space)
    added: list[str] = []
    for name, params in recipes.items():
        if name in done or len(added) >= room:
            continue
        study.enqueue_trial(params, user_attrs={RECIPE_ATTR: name}, skip_if_exists=True)
        added.append(name)
    if added:
        notes.append(f"recipes queued as the first trials: {', '.join(added)}")
    elif not recipes:
        notes.append(f"no published recipe fits the {space.name} space")


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
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM both stop the search once, as KeyboardInterrupt in the main thread.

    Later signals are ignored, so the trial being stopped can still be recorded as
    interrupted and the storage left consistent. A signal that arrives while a weakref
    callback or a ``__del__`` runs (garbage collection) is delivered again just after:
    Python ignores exceptions raised there, so the stop would be lost, and with it every
    later signal.
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
        raise KeyboardInterrupt()

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resume_command(options: SearchOptions) -> str:
    """The command that continues this search (passwords masked).

    It repeats every option the study checks on resume (weights, objective, seed, sampler,
    pruner) where it differs from the default: without them the resumed run would be
    refused ("created with seed=3, but this run has seed=0"). The space and the data come
    from the study; recipes and workers are repeated so the run goes on as it was.
    """
    parts = ["blood-automl", "search", "--study", options.study, "--trials", str(options.trials)]
    if options.storage:
        parts += ["--storage", mask_url(options.storage)]
    defaults = SearchOptions()
    for name in ("weights", "objective", "seed", "sampler", "pruner"):
        value = getattr(options, name)
        if value != getattr(defaults, name):
            parts += [f"--{name}", shlex.quote(str(value))]
    if not options.recipes:
        parts.append("--no-recipes")
    if options.workers is not None and options.workers > 1:
        parts += ["--workers", str(options.workers)]
    return " ".join(parts)


@dataclass
class SearchSetup:
    """A study ready for workers: its storage, space, prepared data and weights mode."""

    storage: BaseStorage
    study: optuna.Study
    space: Space
    data: PreparedData
    weights: str
    notes: list[str]


def check_options(options: SearchOptions) -> None:
    """Refuse option values no search can run with, before anything is written."""
    if options.trials < 1:
        raise ConfigError(f"--trials must be at least 1, but got {options.trials}")
    if options.timeout is not None and options.timeout <= 0:
        raise ConfigError(
            f"--timeout must be a positive number of seconds, but got {options.timeout}"
        )
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, but got {options.workers}")
    check_shared_url(options.storage)  # a file or server all workers share, not :memory:
    if options.space and options.preset:
        raise ConfigError("give --preset or --space, not both (a space file names its base preset)")
    if options.space or options.preset:
        load_space(Path(options.space) if options.space else str(options.preset))
    StudySettings(
        objective=options.objective,  # type: ignore[arg-type]
        sampler=options.sampler,  # type: ignore[arg-type]
        pruner=options.pruner,  # type: ignore[arg-type]
        seed=options.seed,
    )


def setup_search(options: SearchOptions, *, worker: int = 0) -> SearchSetup:
    """Open (or create) the study and its data, as worker ``worker`` of a search.

    Worker 0 does what must happen once: it checks the weights of every backbone of the
    space, prepares the data (clean, split, cache) and queues the recipes. Other workers
    load the prepared data and the study, whose stored settings they must match.
    """
    check_options(options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" chatter
    notes: list[str] = []
    storage = open_storage(options.storage)
    existing = {info.name for info in list_studies(storage)}
    stored_space = None
    if options.study in existing:
        stored_space = get_study(storage, options.study).user_attrs.get(SPACE_ATTR)
    space = _choose_space(options, stored_space, notes)

    from blood_automl.trainer import check_weights, configure, weights_mode

    configure(threads=options.threads)
    weights = weights_mode(options.weights)
    if worker == 0:
        missing = check_weights(space.backbones, weights)
        if missing:
            raise ConfigError(
                f"ImageNet weights missing for {len(missing)} backbone(s) of the {space.name} "
                "space: "
                + "; ".join(missing)
                + " -- put the files there, narrow the space with --space, or use --weights none"
            )
    folder = study_dir(options.storage, options.study)
    had_data = (folder / "data").exists()
    data = _prepare(options if worker == 0 else replace(options, data=None), folder, notes)

    settings = StudySettings(
        objective=options.objective,  # type: ignore[arg-type]
        sampler=options.sampler,  # type: ignore[arg-type]
        pruner=options.pruner,  # type: ignore[arg-type]
        seed=options.seed,
        max_resource=_max_epochs(space),
    )
    metadata = {
        "space_name": space.name,
        "space_version": space.version,
        "data_fingerprint": data.fingerprint,
        "image_size": data.image_size,
        "weights": weights,
        "class_names": list(data.class_names),
    }
    try:
        study = create_or_load_study(storage, options.study, settings, metadata, worker=worker)
    except DataError:
        # The study was made from other data (on a server storage, by another machine whose
        # prepared folder is not this one). The folder prepared just now holds data that is
        # not the study's: remove it, so nothing is left behind and the right --data works.
        if not had_data:
            shutil.rmtree(folder / "data", ignore_errors=True)
        raise
    if worker == 0:
        if SPACE_ATTR not in study.user_attrs:
            study.set_user_attr(SPACE_ATTR, space.to_dict())
        save_study_note(study)  # the dashboard's study note: objective, settings, parameters
        if options.recipes:
            _enqueue_recipes(study, space, notes, remaining_trials(study, options.trials))
    return SearchSetup(storage, study, space, data, weights, notes)


def stopped_by_user(study: optuna.Study, options: SearchOptions) -> SearchStopped:
    """The error a search ends with after SIGINT or SIGTERM: counts and how to resume."""
    counts = study_counts(study)
    return SearchStopped(
        f"search stopped by the user with {counts['finished']} of {options.trials} trials "
        f"finished; the running trial is marked interrupted and not counted; resume with: "
        f"{resume_command(options)}",
        exit_code=130,
    )


def work(options: SearchOptions, setup: SearchSetup, progress: SearchProgress | None = None) -> int:
    """Run trials in this process until the study reaches its target; return how many ran."""
    ctx = SearchContext(
        space=setup.space,
        data=setup.data,
        weights=setup.weights,
        objective=options.objective,
        seed=options.seed,
        patience=options.patience,
        artifact_store=artifact_store_for(options.storage, options.study),
        on_epoch=None if progress is None else progress.on_epoch,
    )
    streak = FailureStreak(options.max_failures)
    callbacks: list[Any] = [streak] if progress is None else [progress.on_trial_end, streak]
    try:
        with stop_signals(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            if options.isolate:
                from blood_automl.search.isolate import make_isolated_objective

                objective = make_isolated_objective(
                    ctx,
                    storage_url=options.storage,
                    study_name=options.study,
                    data_dir=study_dir(options.storage, options.study) / "data",
                    threads=options.threads,
                    on_wait=None if progress is None else progress.poll,
                )
            else:
                objective = make_objective(ctx)
            ran = optimize_to_target(
                setup.study,
                objective,
                options.trials,
                timeout=options.timeout,
                catch=(Exception,),
                callbacks=callbacks,
            )
    except (KeyboardInterrupt, Interrupted):
        raise stopped_by_user(setup.study, options) from None
    if streak.tripped:
        raise SearchStopped(
            f"{len(streak.reasons)} trials failed in a row, so the search stopped: "
            + "; ".join(streak.reasons[-options.max_failures :])
        )
    return ran


def run_search(options: SearchOptions, console: Console | None = None) -> SearchResult:
    """Run (or resume) a search until the study has ``options.trials`` finished trials.

    With ``workers`` > 1 the trials run in that many worker processes (one GPU each where
    there are GPUs). Raises :class:`SearchStopped` when interrupted (SIGINT or SIGTERM; the
    running trials are marked interrupted, not counted, and the study stays consistent)
    or when ``max_failures`` trials fail in a row.
    """
    console = console or Console()
    check_options(options)
    if options.workers is None or options.workers > 1:
        from blood_automl.search.workers import default_workers, run_parallel

        n = options.workers or default_workers()
        if n > 1:
            return run_parallel(replace(options, workers=n), console)
    setup = setup_search(options)
    for note in setup.notes:
        console.print(f"[dim]{note}[/dim]")
    with SearchProgress(setup.study, options.trials, options.objective, console) as progress:
        ran = work(options, setup, progress)
    return SearchResult.of(setup, ran)


def print_summary(result: SearchResult, options: SearchOptions, console: Console) -> None:
    """The end of a search: counts, the top-5 table and the next command."""
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
        console.print("next: " + " ".join(nxt))
    elif sys.stdout.isatty():
        console.print("no trial completed yet")
