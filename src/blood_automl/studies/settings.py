"""Study settings: objective metric, sampler, pruner, seed, and the sampler and pruner they make."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning

from blood_automl.errors import ConfigError
from blood_automl.studies.records import (
    MAX_RESOURCE_ATTR,
    OBJECTIVE_ATTR,
    PRUNER_ATTR,
    SAMPLER_ATTR,
    SEED_ATTR,
)

Objective = Literal["accuracy", "balanced_accuracy", "macro_f1"]
SamplerName = Literal["tpe", "random", "gp"]
PrunerName = Literal["hyperband", "median", "none"]

OBJECTIVES: tuple[str, ...] = get_args(Objective)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)


@dataclass(frozen=True)
class StudySettings:
    """What a study is run with, beyond its storage and name.

    ``metadata`` holds what the search adds (space and its version, data fingerprint and
    split, image size, weights mode); like the other fields it is stored with the study and
    checked when the study is resumed. ``max_resource`` is the largest global epoch count
    of the space, Hyperband's budget (``None``: Optuna's "auto").
    """

    objective: Objective = "accuracy"
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "hyperband"
    seed: int | None = None
    max_resource: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("objective", self.objective, OBJECTIVES, "--objective")
        _check_choice("sampler", self.sampler, SAMPLERS, "--sampler")
        _check_choice("pruner", self.pruner, PRUNERS, "--pruner")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed must be a whole number >= 0, but got {self.seed!r}")
        if self.max_resource is not None and (
            not isinstance(self.max_resource, int) or self.max_resource < 1
        ):
            raise ConfigError(
                f"max_resource (the most epochs a trial can train) must be a whole number "
                f">= 1, but got {self.max_resource!r}"
            )
        object.__setattr__(self, "metadata", dict(self.metadata))

    def recorded(self) -> dict[str, Any]:
        """The fields stored as study user attributes (``metadata`` is stored key by key)."""
        return {
            OBJECTIVE_ATTR: self.objective,
            SAMPLER_ATTR: self.sampler,
            PRUNER_ATTR: self.pruner,
            SEED_ATTR: self.seed,
            MAX_RESOURCE_ATTR: self.max_resource,
        }


def make_sampler(
    settings: StudySettings, worker: int = 0, trials_before: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler of ``settings``, seeded from ``seed``, ``worker`` and ``trials_before``.

    A new study in one worker uses ``seed`` itself. Parallel workers (``worker`` i) and a
    resumed study (``trials_before`` trials already there) get a seed derived from all
    three: otherwise they would draw again the random start-up trials already drawn.
    """
    seed = sampler_seed(settings.seed, worker, trials_before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if settings.sampler == "tpe":
            return optuna.samplers.TPESampler(
                multivariate=True, group=True, constant_liar=True, seed=seed
            )
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("scipy") is None:
            raise ConfigError(
                "sampler 'gp' needs PyTorch and SciPy, which are not installed; "
                "pip install torch scipy (the CPU build is enough), or use --sampler tpe"
            )
        return optuna.samplers.GPSampler(seed=seed)


def sampler_seed(seed: int | None, worker: int = 0, trials_before: int = 0) -> int | None:
    """``seed`` for worker 0 of a new study; a deterministic mix for other workers or resumes."""
    if seed is None or (worker == 0 and trials_before == 0):
        return seed
    state = np.random.SeedSequence([seed, worker, trials_before]).generate_state(1)
    return int(state[0])


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    """The pruner of ``settings``: Hyperband over global epochs, median, or none."""
    if settings.pruner == "hyperband":
        max_resource: int | str = "auto" if settings.max_resource is None else settings.max_resource
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_resource, reduction_factor=3
        )
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _check_choice(name: str, value: object, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(choices)}, but got {value!r}; "
            f"give one of those with {option}"
        )
