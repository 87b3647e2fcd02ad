"""The names and forms of what a study stores: study and trial user attributes.

Every key a study or trial user attribute is stored under is named here, and nowhere
else: stores written by earlier versions are read with the same strings. The records
(:class:`TrialRecord`, :class:`WorkerRecord`, :class:`StudyRecord`, :class:`RefitRecord`)
group what is written or read together; reading tolerates every missing key, with the
defaults the readers have always used. Nothing here needs Optuna: a trial or study is
anything with ``user_attrs``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# --- trial attributes: written when the trial starts -------------------------------------
BACKBONE_ATTR = "backbone"
"""Trial attribute: the backbone of the trial's configuration."""
CONFIG_ATTR = "config"
"""Trial attribute: the whole configuration given to the trainer (``TrialConfig.to_dict()``)."""
SEED_ATTR = "seed"
"""Trial attribute: the trial's training seed. Study attribute: the study's seed."""

# --- trial attributes: written when the trial has trained --------------------------------
VAL_METRICS_ATTR = "val_metrics"
"""Trial attribute: validation accuracy, balanced accuracy, macro F1 and per-class metrics."""
HISTORY_ATTR = "history"
"""Trial attribute: one row per epoch (step, phase, losses, metrics)."""
EPOCHS_ATTR = "epochs"
"""Trial attribute: ``[head epochs, fine-tune epochs]`` up to the best validation score."""
BEST_STEP_ATTR = "best_step"
"""Trial attribute: the step of the best validation score."""
UNFREEZE_FROM_ATTR = "unfreeze_from"
"""Trial attribute: the first backbone layer trained in the fine-tune phase (or None)."""
TRAIN_SECONDS_ATTR = "train_seconds"
"""Trial attribute: seconds spent training, rounded to 0.1."""

# --- trial attributes: how the trial ended, and where ------------------------------------
FAIL_REASON_ATTR = "fail_reason"
"""Trial attribute: why the trial failed, one line."""
INTERRUPTED_ATTR = "interrupted"
"""Trial attribute of a trial stopped by SIGINT or SIGTERM: it says nothing of its params."""
SURPLUS_ATTR = "surplus"
"""Trial attribute of a trial that was not run because the study already had its N trials."""
WARNINGS_ATTR = "warnings"
"""Trial attribute: what went wrong around a trial that still counts (figures not written)."""
STOP_AFTER_ATTR = "stop_after"
"""Trial attribute of a trial that completed although the disk failed: the search stops after it."""
RECIPE_ATTR = "recipe"
"""Trial attribute of a queued published recipe (or the default start): its name."""
LOG_ATTR = "log"
"""Trial attribute: the path of the trial's own log file."""
WORKER_PID_ATTR = "worker_pid"
"""Trial attribute: the process id of the trial worker that trained the trial."""
WORKER_TRIALS_ATTR = "worker_trials"
"""Trial attribute: how many trials that worker had served, this one included."""
WORKER_RSS_ATTR = "worker_rss_mib"
"""Trial attribute: the worker's resident memory after the trial, MiB."""
WORKER_SECONDS_ATTR = "worker_seconds"
"""Trial attribute: seconds the worker spent on the trial (training, figures, storage)."""

OUTCOME_ATTRS = frozenset({INTERRUPTED_ATTR, FAIL_REASON_ATTR})
"""Trial attributes that say how one run of a trial ended: a re-run with the same
parameters must not inherit them."""
UNCOUNTED_ATTRS = frozenset({SURPLUS_ATTR, INTERRUPTED_ATTR})
"""Trial attributes whose presence means the trial does not count towards ``--trials``."""

# --- study attributes: the settings, checked on resume -----------------------------------
OBJECTIVE_ATTR = "objective"
"""Study attribute: the metric maximized (accuracy, balanced_accuracy, macro_f1)."""
SAMPLER_ATTR = "sampler"
"""Study attribute: the sampler's name."""
PRUNER_ATTR = "pruner"
"""Study attribute: the pruner's name."""
MAX_RESOURCE_ATTR = "max_resource"
"""Study attribute: Hyperband's budget, the most epochs a trial reports (or None)."""
SETTINGS_ATTRS = (OBJECTIVE_ATTR, SAMPLER_ATTR, PRUNER_ATTR, SEED_ATTR, MAX_RESOURCE_ATTR)
"""The study attributes that hold ``StudySettings``' own fields."""

# --- study attributes: what the search adds ---------------------------------------------
SPACE_ATTR = "space"
"""Study attribute: the search space (its stored form, with its schema version)."""
SPACE_NAME_ATTR = "space_name"
"""Study attribute: the name of the search space."""
SPACE_VERSION_ATTR = "space_version"
"""Study attribute: the version of the search space."""
PRESET_ATTR = "preset"
"""Study attribute of older studies: the preset searched."""
DATA_FINGERPRINT_ATTR = "data_fingerprint"
"""Study attribute: the fingerprint of the prepared data (images, labels, split)."""
SPLIT_ATTR = "split"
"""Study attribute of older studies: the split of the data."""
DATA_SOURCE_ATTR = "data_source"
"""Study attribute of older studies: where the data came from."""
N_IMAGES_ATTR = "n_images"
"""Study attribute of older studies: the number of images."""
IMAGE_SIZE_ATTR = "image_size"
"""Study attribute: the side of the images in pixels."""
WEIGHTS_ATTR = "weights"
"""Study attribute: the weights mode of the backbones (imagenet or none)."""
CLASS_NAMES_ATTR = "class_names"
"""Study attribute: the class names, in label order."""
CREATED_WITH_ATTR = "created_with"
"""Study attribute: ``blood-automl``, the program that made the study."""
CREATED_WITH = "blood-automl"
"""The value of :data:`CREATED_WITH_ATTR`."""
VERSIONS_ATTR = "versions"
"""Study attribute holding package versions; written last, so it marks a fully recorded study."""
REFIT_ATTR = "refit"
"""The prefix of the study attribute ``refit_trial_<number>``: a refit of that trial."""

_REFIT_KEY = re.compile(rf"{REFIT_ATTR}_trial_(\d+)")


def refit_attr(trial_number: int) -> str:
    """The study attribute of a refit of trial ``trial_number``: ``refit_trial_<number>``."""
    return f"{REFIT_ATTR}_trial_{trial_number}"


class HasUserAttrs(Protocol):
    """A trial or study: anything with ``user_attrs`` (Optuna's, or a test's)."""

    @property
    def user_attrs(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class WorkerRecord:
    """Which trial worker trained a trial, and what it cost."""

    pid: int
    trials: int
    rss_mib: float
    seconds: float

    def to_user_attrs(self) -> dict[str, Any]:
        """The trial attributes that store this record."""
        return {
            WORKER_PID_ATTR: self.pid,
            WORKER_TRIALS_ATTR: self.trials,
            WORKER_RSS_ATTR: self.rss_mib,
            WORKER_SECONDS_ATTR: self.seconds,
        }

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> WorkerRecord | None:
        """The record in ``attrs``, or None for a trial no trial worker trained."""
        if WORKER_PID_ATTR not in attrs:
            return None
        return cls(
            pid=attrs[WORKER_PID_ATTR],
            trials=attrs.get(WORKER_TRIALS_ATTR, 0),
            rss_mib=attrs.get(WORKER_RSS_ATTR, 0.0),
            seconds=attrs.get(WORKER_SECONDS_ATTR, 0.0),
        )


@dataclass(frozen=True)
class TrialRecord:
    """What a trial stores: its start, what it trained, how it ended.

    Missing attributes read as: ``seed`` 0, ``history`` and ``warnings`` empty,
    ``epochs`` None (a reader falls back to the configuration's epochs), everything
    else None. :meth:`to_user_attrs` leaves out what is None or empty, so a marker such
    as ``interrupted`` is stored only when it is set.
    """

    backbone: str | None = None
    config: dict[str, Any] | None = None
    seed: int = 0
    val_metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs: tuple[int, ...] | None = None
    best_step: int | None = None
    unfreeze_from: str | None = None
    train_seconds: float | None = None
    fail_reason: str | None = None
    interrupted: str | None = None
    surplus: str | None = None
    warnings: tuple[str, ...] = ()
    stop_after: str | None = None
    recipe: str | None = None
    log: str | None = None
    worker: WorkerRecord | None = None

    @property
    def counted(self) -> bool:
        """False for a surplus or interrupted trial, which does not count towards ``--trials``."""
        return self.surplus is None and self.interrupted is None

    def started_attrs(self) -> dict[str, Any]:
        """The attributes written when the trial starts: backbone, configuration, seed."""
        return {BACKBONE_ATTR: self.backbone, CONFIG_ATTR: self.config, SEED_ATTR: self.seed}

    def trained_attrs(self) -> dict[str, Any]:
        """The attributes written when the trial has trained, each one even when None."""
        return {
            VAL_METRICS_ATTR: self.val_metrics,
            HISTORY_ATTR: self.history,
            EPOCHS_ATTR: None if self.epochs is None else list(self.epochs),
            BEST_STEP_ATTR: self.best_step,
            UNFREEZE_FROM_ATTR: self.unfreeze_from,
            TRAIN_SECONDS_ATTR: self.train_seconds,
        }

    def to_user_attrs(self) -> dict[str, Any]:
        """Every attribute of the record that is set (not None, not empty)."""
        ended = {
            FAIL_REASON_ATTR: self.fail_reason,
            INTERRUPTED_ATTR: self.interrupted,
            SURPLUS_ATTR: self.surplus,
            WARNINGS_ATTR: list(self.warnings),
            STOP_AFTER_ATTR: self.stop_after,
            RECIPE_ATTR: self.recipe,
            LOG_ATTR: self.log,
        }
        attrs = {**self.started_attrs(), **self.trained_attrs(), **ended}
        kept = {k: v for k, v in attrs.items() if v is not None and v != []}
        return kept | ({} if self.worker is None else self.worker.to_user_attrs())

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """The record stored in ``attrs``, missing attributes at their defaults."""
        epochs = attrs.get(EPOCHS_ATTR)
        return cls(
            backbone=attrs.get(BACKBONE_ATTR),
            config=attrs.get(CONFIG_ATTR),
            seed=attrs.get(SEED_ATTR, 0),
            val_metrics=attrs.get(VAL_METRICS_ATTR),
            history=list(attrs.get(HISTORY_ATTR) or []),
            epochs=tuple(epochs) if epochs else None,
            best_step=attrs.get(BEST_STEP_ATTR),
            unfreeze_from=attrs.get(UNFREEZE_FROM_ATTR),
            train_seconds=attrs.get(TRAIN_SECONDS_ATTR),
            fail_reason=attrs.get(FAIL_REASON_ATTR),
            interrupted=attrs.get(INTERRUPTED_ATTR),
            surplus=attrs.get(SURPLUS_ATTR),
            warnings=tuple(attrs.get(WARNINGS_ATTR) or ()),
            stop_after=attrs.get(STOP_AFTER_ATTR),
            recipe=attrs.get(RECIPE_ATTR),
            log=attrs.get(LOG_ATTR),
            worker=WorkerRecord.from_user_attrs(attrs),
        )

    @classmethod
    def from_trial(cls, trial: HasUserAttrs) -> TrialRecord:
        """The record a trial (an Optuna trial or frozen trial) stores."""
        return cls.from_user_attrs(trial.user_attrs)


@dataclass(frozen=True)
class RefitRecord:
    """What a refit of one trial stores with the study: its test scores and export folder."""

    test_accuracy: float | None = None
    test_balanced_accuracy: float | None = None
    test_macro_f1: float | None = None
    out: str | None = None
    created: str | None = None

    def to_value(self) -> dict[str, Any]:
        """The value stored under :func:`refit_attr`."""
        return {
            "test_accuracy": self.test_accuracy,
            "test_balanced_accuracy": self.test_balanced_accuracy,
            "test_macro_f1": self.test_macro_f1,
            "out": self.out,
            "created": self.created,
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> RefitRecord:
        """The record stored as ``value`` (None for what it lacks)."""
        return cls(
            test_accuracy=value.get("test_accuracy"),
            test_balanced_accuracy=value.get("test_balanced_accuracy"),
            test_macro_f1=value.get("test_macro_f1"),
            out=value.get("out"),
            created=value.get("created"),
        )


@dataclass(frozen=True)
class StudyRecord:
    """What a study stores: its settings, space, data and weights, and its refits.

    Missing attributes read as None, except ``weights`` (``imagenet``, the only mode of
    the first studies) and ``refits`` (none). :meth:`to_user_attrs` leaves out what is
    None, so the settings stored as None (a study without seed) are written by
    ``StudySettings.recorded()``, not here.
    """

    objective: str | None = None
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    max_resource: int | None = None
    space: dict[str, Any] | None = None
    space_name: str | None = None
    space_version: str | None = None
    data_fingerprint: str | None = None
    image_size: int | None = None
    weights: str = "imagenet"
    class_names: list[str] | None = None
    created_with: str | None = None
    versions: dict[str, str | None] | None = None
    refits: dict[int, RefitRecord] = field(default_factory=dict)

    def search_attrs(self) -> dict[str, Any]:
        """What the search stores beyond the settings: space name and version, data, weights."""
        return {
            SPACE_NAME_ATTR: self.space_name,
            SPACE_VERSION_ATTR: self.space_version,
            DATA_FINGERPRINT_ATTR: self.data_fingerprint,
            IMAGE_SIZE_ATTR: self.image_size,
            WEIGHTS_ATTR: self.weights,
            CLASS_NAMES_ATTR: self.class_names,
        }

    def to_user_attrs(self) -> dict[str, Any]:
        """Every attribute of the record that is set (not None)."""
        attrs = {
            OBJECTIVE_ATTR: self.objective,
            SAMPLER_ATTR: self.sampler,
            PRUNER_ATTR: self.pruner,
            SEED_ATTR: self.seed,
            MAX_RESOURCE_ATTR: self.max_resource,
            SPACE_ATTR: self.space,
            **self.search_attrs(),
            CREATED_WITH_ATTR: self.created_with,
            VERSIONS_ATTR: self.versions,
        }
        kept = {k: v for k, v in attrs.items() if v is not None}
        return kept | {refit_attr(n): refit.to_value() for n, refit in self.refits.items()}

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> StudyRecord:
        """The record stored in ``attrs``, missing attributes at their defaults."""
        refits = {}
        for key, value in attrs.items():
            match = _REFIT_KEY.fullmatch(key)
            if match and isinstance(value, Mapping):
                refits[int(match.group(1))] = RefitRecord.from_value(value)
        return cls(
            objective=attrs.get(OBJECTIVE_ATTR),
            sampler=attrs.get(SAMPLER_ATTR),
            pruner=attrs.get(PRUNER_ATTR),
            seed=attrs.get(SEED_ATTR),
            max_resource=attrs.get(MAX_RESOURCE_ATTR),
            space=attrs.get(SPACE_ATTR),
            space_name=attrs.get(SPACE_NAME_ATTR),
            space_version=attrs.get(SPACE_VERSION_ATTR),
            data_fingerprint=attrs.get(DATA_FINGERPRINT_ATTR),
            image_size=attrs.get(IMAGE_SIZE_ATTR),
            weights=str(attrs.get(WEIGHTS_ATTR, "imagenet")),
            class_names=attrs.get(CLASS_NAMES_ATTR),
            created_with=attrs.get(CREATED_WITH_ATTR),
            versions=attrs.get(VERSIONS_ATTR),
            refits=refits,
        )

    @classmethod
    def from_study(cls, study: HasUserAttrs) -> StudyRecord:
        """The record a study (an Optuna study or frozen study) stores."""
        return cls.from_user_attrs(study.user_attrs)
