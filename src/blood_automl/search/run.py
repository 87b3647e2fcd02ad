"""The search job: prepare data, choose the space, open the study, enqueue recipes, run trials to the target."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from blood_automl.data import PreparedData, load_prepared, prepare_data
from blood_automl.errors import BloodAutoMLError, ConfigError, DataError, StorageError
from blood_automl.search.faults import EnvironmentStop, classify, stop_message
from blood_automl.search.objective import (
    FAIL_REASON,
    INTERRUPTED,
    STOP_AFTER,
    WARNINGS,
    Interrupted,
    SearchContext,
    make_objective,
    one_line,
)
from blood_automl.search.options import (
    SearchOptions,
    check_data_source,
    check_options,
    check_space_fits,
    resolve_options,
)
from blood_automl.search.progress import SearchProgress, data_note, space_note
from blood_automl.signals import stop_signals
from blood_automl.spaces import (
    DEFAULT_START,
    Choices,
    Fixed,
    Space,
    applicable_recipes,
    default_start,
    load_space,
    read_space_file,
)
from blood_automl.studies import (
    RECIPE_ATTR,
    SPACE_ATTR,
    StudySettings,
    artifact_store_for,
    create_or_load_study,
    data_dir,
    logs_dir,
    mask_url,
    open_storage,
    optimize_to_target,
    remaining_trials,
    save_study_note,
    study_counts,
    study_dir,
    summarize,
)
from blood_automl.studies.records import SURPLUS_ATTR, StudyRecord
from blood_automl.studies.storage import storage_errors
from blood_automl.studies.urls import DEFAULT_STORAGE, is_sqlite, parse_url, sqlite_file
from blood_automl.trainer.quiet import import_tensorflow_quietly


class SearchStopped(BloodAutoMLError):
    """The search stopped before its target: interrupted, or too many failures in a row."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class SearchResult:
    """What a finished search run did."""

    study: optuna.Study
    ran: int
    counts: dict[str, int]
    top: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    options: SearchOptions | None = None  # as run (options left out taken from the study)

    @classmethod
    def of(cls, setup: SearchSetup, ran: int) -> SearchResult:
        """The result of a search on ``setup`` in which this run ran ``ran`` trials."""
        return cls(
            study=setup.study,
            ran=ran,
            counts=study_counts(setup.study),
            top=summarize(setup.study, top=5),
            notes=setup.notes,
            options=setup.options,
        )


def _hardware_preset(notes: list[str]) -> str:
    import_tensorflow_quietly()
    from blood_automl.trainer import configure

    gpus = configure().gpus
    preset = "gpu" if gpus else "cpu"
    notes.append(
        f"preset {preset}: TensorFlow sees {gpus} GPU(s)"
        + ("" if gpus else " (use --preset gpu to search the full space anyway)")
    )
    return preset


def _choose_space(options: SearchOptions, stored: dict[str, Any] | None, notes: list[str]) -> Space:
    """The search's space; TensorFlow (needed next) is imported here, its start-up lines hidden."""
    if options.space and options.preset:
        raise ConfigError("give --preset or --space, not both (a space file names its base preset)")
    if options.space:
        path = Path(options.space)
        if "base" in read_space_file(path):
            space = load_space(path)
        else:
            # No base: the preset --preset would choose on this machine, unless the file
            # asks for values only the full gpu space has.
            hardware = _hardware_preset([])
            space = load_space(path, bases=(hardware, "gpu"))
            notes.append(_no_base_note(path, hardware, space.base))
    elif options.preset:
        space = load_space(options.preset)
    elif stored is not None:
        space = Space.from_dict(stored, source="the study's stored space")
        notes.append(f"space {space.name} (version {space.version}) from the study")
    else:
        space = load_space(_hardware_preset(notes))
    import_tensorflow_quietly()
    return space


def _no_base_note(path: Path, hardware: str, base: str) -> str:
    seen = "TensorFlow sees a GPU" if hardware == "gpu" else "TensorFlow sees no GPU"
    if base == hardware:
        return (
            f"space file {path} names no base: it narrows the {base} preset ({seen}); "
            'write base = "gpu" or base = "cpu" in it to choose'
        )
    return (
        f"space file {path} names no base and asks for values beyond the {hardware} preset "
        f"({seen}), so it narrows the {base} preset; write base = ... in it to choose"
    )


def _prepare(options: SearchOptions, folder: Path, notes: list[str]) -> PreparedData:
    try:
        return _prepare_data(options, folder, notes)
    except OSError as exc:  # a full or read-only disk while writing the prepared data
        where = exc.filename or folder / "data"
        raise StorageError(
            f"cannot write the prepared data in {where} ({exc.strerror or exc}); free space "
            f"or make {folder} writable, then run the command again"
        ) from None


def _prepare_data(options: SearchOptions, folder: Path, notes: list[str]) -> PreparedData:
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
    """The largest pruner step a trial of ``space`` can report: Hyperband's budget.

    The pruner sees the epochs of a trial's last phase (see ``spaces.plan``); studies of
    space schema 1 reported every epoch of both phases.
    """

    def high(name: str) -> int:
        domain = space[name]
        if isinstance(domain, Fixed):
            return int(domain.value)
        if isinstance(domain, Choices):
            return int(max(domain.options))
        return int(domain.high)

    if space.schema < 2:
        return high("head_epochs") + high("finetune_epochs")
    return max(high("head_epochs"), high("finetune_epochs"))


class FailureStreak:
    """Optuna callback: stop the study after ``limit`` failed trials in a row, keeping the reasons."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reasons: list[str] = []
        self.tripped = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if SURPLUS_ATTR in trial.user_attrs or INTERRUPTED in trial.user_attrs:
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
    if space.schema >= 2:  # the default configuration first, then the published recipes
        recipes = {DEFAULT_START: default_start(space), **recipes}
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
    options: SearchOptions  # as run: options left out filled from the study


def _stored_study(options: SearchOptions) -> tuple[BaseStorage | None, dict[str, Any] | None]:
    """The storage and the study's stored attributes, when both exist; nothing is created."""
    parsed = parse_url(options.storage or DEFAULT_STORAGE)
    if is_sqlite(parsed):
        path = sqlite_file(parsed)
        if path is not None and not path.exists():
            return None, None
    storage = open_storage(options.storage)
    with storage_errors(storage, f"reading study '{options.study}'"):
        for frozen in storage.get_all_studies():
            if frozen.study_name == options.study:
                return storage, dict(frozen.user_attrs)
    return storage, None


def check_folder(folder: Path) -> None:
    """Refuse a study folder that cannot be made: a file stands where it or a parent must be.

    Nothing is created; a folder that exists must be a folder this process may write in.
    """
    for path in (folder, *folder.parents):
        if path.is_dir():
            if path == folder and not os.access(path, os.W_OK | os.X_OK):
                raise StorageError(
                    f"the study folder {folder} is not writable; make it writable, or "
                    f"choose another --study or --storage"
                )
            return
        if path.exists() or path.is_symlink():
            raise StorageError(
                f"the study folder {folder} cannot be made: {path} is a file, not a folder; "
                f"move that file away, or choose another --study or --storage"
            )


def _check_weights(space: Space, weights: str, image_size: int) -> None:
    from blood_automl.trainer import check_weights

    problems = check_weights(space.backbones, weights, image_size)
    if problems:
        raise ConfigError(
            f"ImageNet weights missing or unreadable for {len(problems)} backbone(s) of the "
            f"{space.name} space: "
            + "; ".join(problems)
            + " -- put the Keras files there, narrow the space with --space, or use --weights none"
        )


def setup_search(options: SearchOptions, *, worker: int = 0) -> SearchSetup:
    """Open (or create) the study and its data, as worker ``worker`` of a search.

    Options left out take the study's stored values (:func:`resolve_options`). Before
    anything is written, worker 0 checks that the data exists, that the space's backbones
    accept the image size, and that every weights file of the space loads; it then
    prepares the data (clean, split, cache) and queues the recipes. Other workers load the
    prepared data and the study, whose stored settings they must match.
    """
    check_options(options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" chatter
    notes: list[str] = []
    storage, stored = _stored_study(options)
    options = resolve_options(options, stored, notes)
    space = _choose_space(options, None if stored is None else stored.get(SPACE_ATTR), notes)
    check_space_fits(space, options.image_size)
    folder = study_dir(options.storage, options.study)
    if worker == 0:
        check_data_source(options.data)
        check_folder(folder)

    from blood_automl.trainer import configure, weights_mode

    configure(threads=options.threads)
    weights = weights_mode(options.weights)
    if worker == 0:
        _check_weights(space, weights, options.image_size)
    if storage is None:
        storage = open_storage(options.storage)
    if worker == 0:
        artifact_store_for(options.storage, options.study)  # made now, or refused: one line
    had_data = (folder / "data").exists()
    data = _prepare(options if worker == 0 else replace(options, data=None), folder, notes)
    notes += [data_note(data.manifest), space_note(space)]

    settings = StudySettings(
        objective=options.objective,
        sampler=options.sampler,
        pruner=options.pruner,
        seed=options.seed,
        max_resource=_max_epochs(space),
    )
    metadata = StudyRecord(
        space_name=space.name,
        space_version=space.version,
        data_fingerprint=data.fingerprint,
        image_size=data.image_size,
        weights=weights,
        class_names=list(data.class_names),
    ).search_attrs()
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
    return SearchSetup(storage, study, space, data, weights, notes, options)


def stopped_by_user(study: optuna.Study, options: SearchOptions) -> SearchStopped:
    """The error a search ends with after SIGINT or SIGTERM: counts and how to resume."""
    counts = study_counts(study)
    return SearchStopped(
        f"search stopped by the user with {counts['finished']} of {options.trials} trials "
        f"finished; the running trial is marked interrupted and not counted; resume with: "
        f"{resume_command(options)}",
        exit_code=130,
    )


def stopped_by_environment(
    study: optuna.Study, options: SearchOptions, stop: EnvironmentStop
) -> SearchStopped:
    """The error a search ends with when the disk, store, weights or data failed."""
    finished: int | None = None
    with contextlib.suppress(Exception):  # the store may be what failed
        finished = study_counts(study)["finished"]
    message = stop_message(stop.reason, stop.trial, finished, options.trials)
    return SearchStopped(f"{message}: {resume_command(options)}")


def stop_after(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: stop the search after a trial that completed although the disk failed."""
    reason = trial.user_attrs.get(STOP_AFTER)
    if reason and trial.state == TrialState.COMPLETE:
        raise EnvironmentStop(f"trial {trial.number} is complete and kept, but {reason}")


class TrialNotes:
    """Optuna callback: print the warnings a finished trial recorded (figures not written)."""

    def __init__(self, console: Console | None) -> None:
        self.console = console

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.console is None:
            return
        for text in trial.user_attrs.get(WARNINGS, []):
            self.console.print(f"note: trial {trial.number}: {text}", soft_wrap=True)


@contextlib.contextmanager
def _objective(
    options: SearchOptions, ctx: SearchContext, progress: SearchProgress | None
) -> Iterator[Any]:
    """The search's objective: trials in trial workers (ended with the block), or in this process."""
    if not options.isolate:
        yield make_objective(ctx)
        return
    from blood_automl.search.isolate import isolated_objective

    with isolated_objective(
        ctx,
        storage_url=options.storage,
        study_name=options.study,
        data_dir=data_dir(options.storage, options.study),
        threads=options.threads,
        on_wait=None if progress is None else progress.poll,
    ) as objective:
        yield objective


def work(options: SearchOptions, setup: SearchSetup, progress: SearchProgress | None = None) -> int:
    """Run trials in this process until the study reaches its target; return how many ran.

    A trial whose configuration cannot train is recorded FAIL and the search goes on; when
    the disk, the store, the weights or the data fail, the search stops with
    :class:`SearchStopped` (exit code 1) and the running trial is not counted.
    """
    artifact_error: str | None = None
    try:
        artifact_store = artifact_store_for(options.storage, options.study)
    except StorageError as exc:
        artifact_store, artifact_error = None, str(exc)
    ctx = SearchContext(
        space=setup.space,
        data=setup.data,
        weights=setup.weights,
        objective=options.objective,
        seed=options.seed,
        patience=options.patience,
        artifact_store=artifact_store,
        artifact_error=artifact_error,
        on_epoch=None if progress is None else progress.on_epoch,
    )
    streak = FailureStreak(options.max_failures)
    notes = TrialNotes(None if progress is None else progress.console)
    callbacks: list[Any] = [streak, stop_after]
    if progress is not None:
        callbacks = [progress.on_trial_end, notes, *callbacks]
    try:
        with (
            stop_signals(),
            warnings.catch_warnings(),
            _objective(options, ctx, progress) as objective,
        ):
            warnings.simplefilter("ignore")
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            ran = optimize_to_target(
                setup.study,
                objective,
                options.trials,
                timeout=options.timeout,
                catch=(Exception,),
                callbacks=callbacks,
            )
    except EnvironmentStop as stop:
        raise stopped_by_environment(setup.study, options, stop) from None
    except (KeyboardInterrupt, Interrupted):
        raise stopped_by_user(setup.study, options) from None
    except Exception as exc:  # the store failed outside a trial (asking, telling, counting)
        if classify(exc) != "environment":
            raise
        fault = EnvironmentStop(one_line(exc))
        raise stopped_by_environment(setup.study, options, fault) from None
    if streak.tripped:
        raise SearchStopped(
            f"{len(streak.reasons)} trials failed in a row, so the search stopped: "
            + "; ".join(streak.reasons[-options.max_failures :])
            + (
                f"; each trial's output is in {logs_dir(options.storage, options.study)}"
                if options.isolate
                else ""
            )
        )
    return ran
