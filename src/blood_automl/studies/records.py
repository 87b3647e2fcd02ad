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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
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


def _stored(
    key: str,
    default: Any = MISSING,
    *,
    read: Callable[[Any], Any] | None = None,
    write: Callable[[Any], Any] | None = None,
) -> Any:
    """A record field stored under ``key``; ``read`` / ``write`` convert a stored value."""
    metadata = {"key": key, "read": read, "write": write}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _stored_values(record: Any, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """{stored key: value as stored} for the record's stored fields (those of ``keys``)."""
    chosen = None if keys is None else set(keys)
    values: dict[str, Any] = {}
    for f in fields(record):
        key = f.metadata.get("key")
        if key is None or (chosen is not None and key not in chosen):
            continue
        value = getattr(record, f.name)
        write = f.metadata["write"]
        values[key] = value if write is None or value is None else write(value)
    return values


def _read_values(record_type: type, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """{field name: value} for the stored fields present in ``attrs`` (absent: the default)."""
    values: dict[str, Any] = {}
    for f in fields(record_type):
        key = f.metadata.get("key")
        if key is None or key not in attrs:
            continue
        read = f.metadata["read"]
        values[f.name] = attrs[key] if read is None else read(attrs[key])
    return values


@dataclass(frozen=True)
class WorkerRecord:
    """Which trial worker trained a trial, and what it cost."""

    pid: int = _stored(WORKER_PID_ATTR)
    trials: int = _stored(WORKER_TRIALS_ATTR, 0)
    rss_mib: float = _stored(WORKER_RSS_ATTR, 0.0)
    seconds: float = _stored(WORKER_SECONDS_ATTR, 0.0)

    def to_user_attrs(self) -> dict[str, Any]:
        """The trial attributes that store this record."""
        return _stored_values(self)

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> WorkerRecord | None:
        """The record in ``attrs``, or None for a trial no trial worker trained."""
        if WORKER_PID_ATTR not in attrs:
            return None
        return cls(**_read_values(cls, attrs))


_STARTED = (BACKBONE_ATTR, CONFIG_ATTR, SEED_ATTR)
_TRAINED = (
    VAL_METRICS_ATTR,
    HISTORY_ATTR,
    EPOCHS_ATTR,
    BEST_STEP_ATTR,
    UNFREEZE_FROM_ATTR,
    TRAIN_SECONDS_ATTR,
)


@dataclass(frozen=True)
class TrialRecord:
    """What a trial stores: its start, what it trained, how it ended.

    Missing attributes read as: ``seed`` 0, ``history`` and ``warnings`` empty,
    ``epochs`` None (a reader falls back to the configuration's epochs), everything
    else None. :meth:`to_user_attrs` leaves out what is None or empty, so a marker such
    as ``interrupted`` is stored only when it is set.
    """

    backbone: str | None = _stored(BACKBONE_ATTR, None)
    config: dict[str, Any] | None = _stored(CONFIG_ATTR, None)
    seed: int = _stored(SEED_ATTR, 0)
    val_metrics: dict[str, Any] | None = _stored(VAL_METRICS_ATTR, None)
    history: list[dict[str, Any]] = _stored(HISTORY_ATTR, [], read=lambda v: list(v or []))
    epochs: tuple[int, ...] | None = _stored(
        EPOCHS_ATTR, None, read=lambda v: tuple(v) if v else None, write=list
    )
    best_step: int | None = _stored(BEST_STEP_ATTR, None)
    unfreeze_from: str | None = _stored(UNFREEZE_FROM_ATTR, None)
    train_seconds: float | None = _stored(TRAIN_SECONDS_ATTR, None)
    fail_reason: str | None = _stored(FAIL_REASON_ATTR, None)
    interrupted: str | None = _stored(INTERRUPTED_ATTR, None)
    surplus: str | None = _stored(SURPLUS_ATTR, None)
    warnings: tuple[str, ...] = _stored(
        WARNINGS_ATTR, (), read=lambda v: tuple(v or ()), write=list
    )
    stop_after: str | None = _stored(STOP_AFTER_ATTR, None)
    recipe: str | None = _stored(RECIPE_ATTR, None)
    log: str | None = _stored(LOG_ATTR, None)
    worker: WorkerRecord | None = None

    @property
    def counted(self) -> bool:
        """False for a surplus or interrupted trial, which does not count towards ``--trials``."""
        return self.surplus is None and self.interrupted is None

    def started_attrs(self) -> dict[str, Any]:
        """The attributes written when the trial starts: backbone, configuration, seed."""
        return _stored_values(self, _STARTED)

    def trained_attrs(self) -> dict[str, Any]:
        """The attributes written when the trial has trained, each one even when None."""
        return _stored_values(self, _TRAINED)

    def to_user_attrs(self) -> dict[str, Any]:
        """Every attribute of the record that is set (not None, not empty)."""
        kept = {k: v for k, v in _stored_values(self).items() if v is not None and v != []}
        return kept | ({} if self.worker is None else self.worker.to_user_attrs())

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        """The record stored in ``attrs``, missing attributes at their defaults."""
        return cls(**_read_values(cls, attrs), worker=WorkerRecord.from_user_attrs(attrs))

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
        return asdict(self)

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> RefitRecord:
        """The record stored as ``value`` (None for what it lacks)."""
        return cls(**{f.name: value.get(f.name) for f in fields(cls)})


_SEARCH = (
    SPACE_NAME_ATTR,
    SPACE_VERSION_ATTR,
    DATA_FINGERPRINT_ATTR,
    IMAGE_SIZE_ATTR,
    WEIGHTS_ATTR,
    CLASS_NAMES_ATTR,
)


@dataclass(frozen=True)
class StudyRecord:
    """What a study stores: its settings, space, data and weights, and its refits.

    Missing attributes read as None, except ``weights`` (``imagenet``, the only mode of
    the first studies) and ``refits`` (none). :meth:`to_user_attrs` leaves out what is
    None, so the settings stored as None (a study without seed) are written by
    ``StudySettings.recorded()``, not here.
    """

    objective: str | None = _stored(OBJECTIVE_ATTR, None)
    sampler: str | None = _stored(SAMPLER_ATTR, None)
    pruner: str | None = _stored(PRUNER_ATTR, None)
    seed: int | None = _stored(SEED_ATTR, None)
    max_resource: int | None = _stored(MAX_RESOURCE_ATTR, None)
    space: dict[str, Any] | None = _stored(SPACE_ATTR, None)
    space_name: str | None = _stored(SPACE_NAME_ATTR, None)
    space_version: str | None = _stored(SPACE_VERSION_ATTR, None)
    data_fingerprint: str | None = _stored(DATA_FINGERPRINT_ATTR, None)
    image_size: int | None = _stored(IMAGE_SIZE_ATTR, None)
    weights: str = _stored(WEIGHTS_ATTR, "imagenet", read=str)
    class_names: list[str] | None = _stored(CLASS_NAMES_ATTR, None)
    created_with: str | None = _stored(CREATED_WITH_ATTR, None)
    versions: dict[str, str | None] | None = _stored(VERSIONS_ATTR, None)
    refits: dict[int, RefitRecord] = field(default_factory=dict)

    def search_attrs(self) -> dict[str, Any]:
        """What the search stores beyond the settings: space name and version, data, weights."""
        return _stored_values(self, _SEARCH)

    def to_user_attrs(self) -> dict[str, Any]:
        """Every attribute of the record that is set (not None)."""
        kept = {k: v for k, v in _stored_values(self).items() if v is not None}
        return kept | {refit_attr(n): refit.to_value() for n, refit in self.refits.items()}

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> StudyRecord:
        """The record stored in ``attrs``, missing attributes at their defaults."""
        refits = {}
        for key, value in attrs.items():
            match = _REFIT_KEY.fullmatch(key)
            if match and isinstance(value, Mapping):
                refits[int(match.group(1))] = RefitRecord.from_value(value)
        return cls(**_read_values(cls, attrs), refits=refits)

    @classmethod
    def from_study(cls, study: HasUserAttrs) -> StudyRecord:
        """The record a study (an Optuna study or frozen study) stores."""
        return cls.from_user_attrs(study.user_attrs)
