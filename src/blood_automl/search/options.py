"""The options of ``blood-automl search``: checked before anything is imported or written, filled from the study on resume."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blood_automl.errors import ConfigError
from blood_automl.spaces import Space, load_space
from blood_automl.spaces.registry import get_backbone
from blood_automl.studies import DEFAULT_STUDY, StudySettings, check_shared_url, check_study_name
from blood_automl.studies import records as rec
from blood_automl.studies.settings import Objective, PrunerName, SamplerName

RESUMABLE = {
    "weights": rec.WEIGHTS_ATTR,
    "image_size": rec.IMAGE_SIZE_ATTR,
    "objective": rec.OBJECTIVE_ATTR,
    "seed": rec.SEED_ATTR,
    "sampler": rec.SAMPLER_ATTR,
    "pruner": rec.PRUNER_ATTR,
}
"""Options a study stores (option -> its study attribute); left out on resume, they take the
study's value."""

MAX_SEED = 2**32 - 1
"""NumPy's and Keras's seeds are unsigned 32-bit integers."""
MAX_TRIALS = 100_000
MAX_TIMEOUT = 366 * 24 * 3600.0
WORKER_MEMORY = 1.5 * 2**30
"""Bytes of memory one CPU worker needs: TensorFlow, the prepared data and a small model."""
WORKERS_PER_CORE = 2
MAX_TRIALS_PER_WORKER = 25
"""Trials one trial worker (the process that trains trials) serves before a fresh one replaces it."""
TRIALS_PER_WORKER_ENV = "BLOOD_AUTOML_TRIALS_PER_WORKER"
"""Environment variable replacing :data:`MAX_TRIALS_PER_WORKER`; 1 trains every trial in a
fresh process (bench/overhead.py compares the two)."""


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``blood-automl search`` takes; defaults are the CLI's.

    ``given`` names the options of :data:`RESUMABLE` given on the command line; the others
    take the study's stored values when it is resumed. ``None`` means all were given.
    """

    data: str | None = None
    trials: int = 100
    timeout: float | None = None
    study: str = DEFAULT_STUDY
    storage: str | None = None
    preset: str | None = None
    space: str | None = None
    weights: str = "imagenet"
    image_size: int = 96
    objective: Objective = "accuracy"
    recipes: bool = True
    seed: int = 0
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "hyperband"
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
    given: frozenset[str] | None = None


@dataclass(frozen=True)
class Capacity:
    """How many search workers this machine can hold, and why.

    Memory is the hard limit (a worker past it is killed by the system): each worker needs
    :data:`WORKER_MEMORY`. Cores are shared, each worker getting its share of TensorFlow's
    threads, up to :data:`WORKERS_PER_CORE` workers a core.
    """

    cores: int
    memory: int | None  # bytes, None when unknown

    @property
    def workers(self) -> int:
        """The most workers this machine runs: its memory's worth, at most two a core."""
        by_cores = WORKERS_PER_CORE * self.cores
        by_memory = by_cores if self.memory is None else int(self.memory // WORKER_MEMORY)
        return max(1, min(by_cores, by_memory))

    def describe(self) -> str:
        memory = "" if self.memory is None else f", {self.memory / 2**30:.1f} GiB of memory"
        return f"{self.cores} core(s){memory}"


def machine_capacity() -> Capacity:
    """This machine's usable cores and memory (the process's CPU set, a cgroup memory limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return Capacity(cores=max(1, cores), memory=_memory_bytes())


def _memory_bytes() -> int | None:
    total: int | None = None
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not POSIX
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def check_options(options: SearchOptions, capacity: Capacity | None = None) -> None:
    """Refuse option values no search can run with, before TensorFlow or anything is written."""
    check_study_name(options.study)
    _check_whole("--trials", options.trials, 1, MAX_TRIALS)
    if options.timeout is not None:
        t = options.timeout
        if not isinstance(t, int | float) or not math.isfinite(t) or not 0 < t <= MAX_TIMEOUT:
            raise ConfigError(
                f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT:.0f} "
                f"(a year), but got {t}; give e.g. --timeout 3600, or leave it out to run "
                f"until --trials are finished"
            )
    _check_whole("--seed", options.seed, 0, MAX_SEED)
    _check_image_size(options.image_size)
    _check_workers(options.workers, capacity)
    check_shared_url(options.storage)  # a file or server all workers share, not :memory:
    trials_per_worker()
    if options.space and options.preset:
        raise ConfigError("give --preset or --space, not both (a space file names its base preset)")
    if options.space or options.preset:
        space = load_space(Path(options.space) if options.space else str(options.preset))
        check_space_fits(space, options.image_size)
    StudySettings(
        objective=options.objective,
        sampler=options.sampler,
        pruner=options.pruner,
        seed=options.seed,
    )


def trials_per_worker() -> int:
    """``$BLOOD_AUTOML_TRIALS_PER_WORKER`` (a whole number >= 1), else :data:`MAX_TRIALS_PER_WORKER`."""
    text = os.environ.get(TRIALS_PER_WORKER_ENV, "").strip()
    if not text:
        return MAX_TRIALS_PER_WORKER
    if not text.isdigit() or not 1 <= int(text) <= MAX_TRIALS:
        raise ConfigError(
            f"{TRIALS_PER_WORKER_ENV} must be a whole number of trials >= 1, but got {text!r}; "
            f"unset it to use the default ({MAX_TRIALS_PER_WORKER})"
        )
    return int(text)


def _check_whole(option: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{option} must be at least {low} and at most {high} (a whole number), but got "
            f"{value}; give {option} in that range"
        )


def _check_image_size(size: Any) -> None:
    from blood_automl.data.validate import check_image_size

    check_image_size(size)


def _check_workers(workers: int | None, capacity: Capacity | None) -> None:
    if workers is None:
        return
    _check_whole("--workers", workers, 1, 10_000)
    if workers == 1:
        return
    capacity = capacity or machine_capacity()
    if workers > capacity.workers:
        raise ConfigError(
            f"--workers {workers} is more than this machine can run ({capacity.describe()}: "
            f"each worker needs about {WORKER_MEMORY / 2**30:.1f} GiB and half a core); give "
            f"--workers {capacity.workers} or fewer, and more machines on one --storage for more"
        )


def check_space_fits(space: Space, image_size: int) -> None:
    """Refuse an image size below what a backbone of ``space`` accepts (keras.applications minimums)."""
    too_small = sorted(
        (spec.min_size, spec.name)
        for spec in (get_backbone(name) for name in space.backbones)
        if image_size < spec.min_size
    )
    if too_small:
        need, name = too_small[-1]
        raise ConfigError(
            f"--image-size {image_size} is too small for {name} in the {space.name} space "
            f"(it needs at least {need} px); give --image-size {need} or more, or a space "
            f"without it (--space)"
        )


def resolve_options(
    options: SearchOptions, stored: dict[str, Any] | None, notes: list[str]
) -> SearchOptions:
    """``options`` with every option left out taken from the study's stored settings."""
    if options.given is None:
        return options
    taken: dict[str, Any] = {}
    if stored is not None:
        for name, key in RESUMABLE.items():
            value = stored.get(key)
            if name not in options.given and value is not None:
                taken[name] = value
    shown = [f"{name} {value}" for name, value in taken.items() if value != getattr(options, name)]
    if shown:
        notes.append("settings of the study: " + ", ".join(shown))
    resolved = replace(options, given=None, **taken)
    check_options(replace(resolved, workers=None))
    return resolved


def check_data_source(data: str | None) -> None:
    """Refuse a ``--data`` path that does not exist (BloodMNIST names are fetched later)."""
    if data is None:
        return
    from blood_automl.data.readers import is_bloodmnist, source_path

    if not is_bloodmnist(data):
        source_path(data)
