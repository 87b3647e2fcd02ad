"""Create, resume, list and read studies: settings checked on resume, best trial, summaries."""

from __future__ import annotations

import datetime
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from blood_automl.errors import ConfigError, StorageError
from blood_automl.studies import metadata as meta
from blood_automl.studies.budget import FINISHED, count_finished, counted
from blood_automl.studies.naming import DEFAULT_STUDY, check_study_name
from blood_automl.studies.records import (
    CREATED_WITH,
    CREATED_WITH_ATTR,
    OBJECTIVE_ATTR,
    SETTINGS_ATTRS,
    VERSIONS_ATTR,
)
from blood_automl.studies.settings import StudySettings, make_pruner, make_sampler
from blood_automl.studies.storage import describe_storage, resolve_storage, storage_errors

OBJECTIVE_NAMES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
}
"""The objectives as people write them."""
_MARKER_WAIT = 10.0  # seconds to wait for a study another worker is recording


@dataclass(frozen=True)
class StudyInfo:
    """One line of :func:`list_studies`."""

    name: str
    n_trials: int
    n_finished: int
    n_complete: int
    best_value: float | None
    best_trial: int | None
    user_attrs: dict[str, Any]


def create_or_load_study(
    storage: BaseStorage | str | None,
    name: str = DEFAULT_STUDY,
    settings: StudySettings | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    worker: int = 0,
) -> optuna.Study:
    """Create the study ``name`` (maximizing), or resume it after checking its settings.

    On creation the settings, ``settings.metadata``, ``metadata`` (e.g. the data
    fingerprint) and the package versions are stored as user attributes. On resume each
    given value is compared with the stored one: a difference raises a one-line
    :class:`ConfigError` or :class:`DataError` naming it; other package versions only
    warn (:class:`~blood_automl.studies.meta.StudyVersionWarning`). ``worker`` offsets
    the sampler seed so parallel workers do not draw the same trials.
    """
    check_study_name(name)
    settings = settings or StudySettings()
    store = resolve_storage(storage)
    expected = {
        key: meta.as_json(key, value)
        for key, value in {**settings.recorded(), **settings.metadata, **(metadata or {})}.items()
    }
    expected[CREATED_WITH_ATTR] = CREATED_WITH
    pruner = make_pruner(settings)
    with storage_errors(store, f"opening study '{name}'"):
        try:
            study = optuna.create_study(
                storage=store,
                study_name=name,
                direction="maximize",
                sampler=make_sampler(settings, worker),
                pruner=pruner,
            )
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=name,
                storage=store,
                sampler=optuna.samplers.RandomSampler(),
                pruner=pruner,
            )
        else:
            meta.record(study, expected)
            name_objective(study, settings.objective)
            return study
        _check_loaded(study, store, expected)
        if study.metric_names is None:  # a study made before objectives were named
            name_objective(study, str(study.user_attrs.get(OBJECTIVE_ATTR, settings.objective)))
        trials_before = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(settings, worker, trials_before)
    return study


def metric_name(objective: str) -> str:
    """How the dashboard names a study's objective: ``validation accuracy`` and so on."""
    return f"validation {OBJECTIVE_NAMES.get(objective, objective)}"


def name_objective(study: optuna.Study, objective: str) -> None:
    """Name the study's objective for the dashboard (instead of "Objective 0")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names([metric_name(objective)])


def _check_loaded(study: optuna.Study, storage: BaseStorage, expected: dict[str, Any]) -> None:
    if study.direction != StudyDirection.MAXIMIZE:
        raise ConfigError(
            f"study '{study.study_name}' in {describe_storage(storage)} minimizes its objective, "
            f"but blood-automl maximizes it; use a new --study name"
        )
    deadline = time.monotonic() + _MARKER_WAIT
    while VERSIONS_ATTR not in study.user_attrs:
        if study.get_trials(deepcopy=False):
            raise ConfigError(
                f"study '{study.study_name}' in {describe_storage(storage)} was not made by "
                f"blood-automl (it has trials but no blood-automl settings); use a new --study name"
            )
        if time.monotonic() > deadline:  # its creator stopped before recording: adopt it
            meta.record(study, expected)
            return
        time.sleep(0.1)  # another worker created it a moment ago and is recording
    meta.check(study, expected)


def get_study(storage: BaseStorage | str | None, name: str = DEFAULT_STUDY) -> optuna.Study:
    """Load an existing study for reading (refit, report, dashboard).

    Raises :class:`StorageError` naming the existing studies when there is no such study.
    """
    store = resolve_storage(storage)
    with storage_errors(store, f"loading study '{name}'"):
        names = [s.study_name for s in store.get_all_studies()]
        if name not in names:
            existing = (
                f"give --study one of the existing studies: {', '.join(names)}"
                if names
                else "existing studies: none yet (run blood-automl search first)"
            )
            raise StorageError(f"study '{name}' not found in {describe_storage(store)}; {existing}")
        return optuna.load_study(
            study_name=name, storage=store, sampler=optuna.samplers.RandomSampler()
        )


def list_studies(storage: BaseStorage | str | None) -> list[StudyInfo]:
    """The studies in a storage, oldest first, with trial counts and best value."""
    store = resolve_storage(storage)
    infos = []
    with storage_errors(store, "listing studies"):
        for frozen in store.get_all_studies():
            study = optuna.load_study(
                study_name=frozen.study_name, storage=store, sampler=optuna.samplers.RandomSampler()
            )
            trials = study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            best = _best(complete)
            infos.append(
                StudyInfo(
                    name=frozen.study_name,
                    n_trials=len(trials),
                    n_finished=count_finished(study),
                    n_complete=len(complete),
                    best_value=None if best is None else best.value,
                    best_trial=None if best is None else best.number,
                    user_attrs=dict(frozen.user_attrs),
                )
            )
    return infos


def best_trial(study: optuna.Study, trial_number: int | None = None) -> FrozenTrial:
    """The best completed trial, or the completed trial ``trial_number``.

    Raises a one-line :class:`StorageError` when the study has no completed trial, or the
    given trial does not exist or did not complete.
    """
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = _best(complete)
    if trial_number is None:
        if best is None:
            raise StorageError(
                f"study '{study.study_name}' has no completed trial yet; "
                f"run blood-automl search first"
            )
        return best
    chosen = next((t for t in trials if t.number == trial_number), None)
    if chosen is None:
        span = f"0 to {trials[-1].number}" if trials else "none yet"
        raise StorageError(
            f"study '{study.study_name}' has no trial {trial_number} (its trials: {span}); "
            f"give a trial number shown by blood-automl report or the dashboard"
        )
    if chosen.state != TrialState.COMPLETE:
        hint = f"the best is trial {best.number}" if best else "none has completed yet"
        raise StorageError(
            f"trial {trial_number} of study '{study.study_name}' is {chosen.state.name}, not "
            f"COMPLETE; choose a completed trial ({hint})"
        )
    return chosen


def summarize(study: optuna.Study, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` completed trials, best first, as plain rows for tables.

    Each row: ``number``, ``value``, ``state``, ``params``, ``duration`` (seconds or
    None), ``user_attrs`` (what the search stored: backbone, metrics...).
    """
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    complete.sort(key=lambda t: (-_value(t), t.number))
    return [_row(t) for t in complete[: max(0, top)]]


def study_counts(study: optuna.Study) -> dict[str, int]:
    """Counted trials by state (``finished`` = complete + pruned + failed), for progress."""
    trials = counted(study.get_trials(deepcopy=False))
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    counts["finished"] = sum(t.state in FINISHED for t in trials)
    return counts


def settings_of(study: optuna.Study) -> StudySettings:
    """The :class:`StudySettings` a study was created with (defaults for what it lacks)."""
    attrs = study.user_attrs
    known = {k: attrs[k] for k in SETTINGS_ATTRS if k in attrs}
    skip = {*known, VERSIONS_ATTR, CREATED_WITH_ATTR}
    return StudySettings(**known, metadata={k: v for k, v in attrs.items() if k not in skip})


def _best(complete: list[FrozenTrial]) -> FrozenTrial | None:
    return max(complete, key=lambda t: (_value(t), -t.number), default=None)


def _value(trial: FrozenTrial) -> float:
    return float("-inf") if trial.value is None else float(trial.value)


def _row(trial: FrozenTrial) -> dict[str, Any]:
    duration: datetime.timedelta | None = trial.duration
    return {
        "number": trial.number,
        "value": trial.value,
        "state": trial.state.name,
        "params": dict(trial.params),
        "duration": None if duration is None else duration.total_seconds(),
        "user_attrs": dict(trial.user_attrs),
    }
