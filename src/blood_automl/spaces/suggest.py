"""suggest: turn an Optuna trial (or a FixedTrial of stored params) into a TrialConfig."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from blood_automl.errors import ConfigError
from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.domains import STEP_DIGITS, Choices, Domain, Fixed
from blood_automl.spaces.params import PARAMS, ParamSpec, applies, config_from_values
from blood_automl.spaces.space import Space, load_space
from blood_automl.spaces.validate import show


class TrialLike(Protocol):
    """The part of ``optuna.trial.Trial`` / ``FixedTrial`` that :func:`suggest` uses."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """Choose one of ``choices``."""
        ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """Choose an integer in ``[low, high]``."""
        ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Choose a number in ``[low, high]``."""
        ...


def suggest(trial: TrialLike, space: Space | None = None) -> TrialConfig:
    """Ask ``trial`` for every parameter of ``space`` (default: the gpu preset) that applies.

    Define-by-run: a parameter whose condition fails (``focal_gamma`` unless
    ``loss == "focal"``, ``weight_decay`` unless the optimizer is adamw or lion, ...) is
    not asked for and takes its inactive value; a parameter the space fixes is applied
    but not asked for. ``suggest(FixedTrial(trial.params), space)`` rebuilds the trial's
    configuration exactly. Raises :class:`ConfigError` when a value does not fit the space.
    """
    space = load_space() if space is None else space
    values: dict[str, Any] = {}
    for spec in PARAMS:
        if applies(spec, values):
            values[spec.name] = _ask(trial, spec, space[spec.name], space)
        else:
            values[spec.name] = spec.inactive_value
    return config_from_values(values)


def _ask(trial: TrialLike, spec: ParamSpec, domain: Domain, space: Space) -> Any:
    if isinstance(domain, Fixed):
        return domain.value
    name = spec.name
    try:
        if isinstance(domain, Choices):
            value = trial.suggest_categorical(name, list(domain.options))
        elif spec.kind == "int":
            step = int(domain.step) if domain.step is not None else 1
            value = trial.suggest_int(
                name, int(domain.low), int(domain.high), step=step, log=domain.log
            )
        else:
            value = trial.suggest_float(
                name, domain.low, domain.high, step=domain.step, log=domain.log
            )
            if isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if domain.step is not None and isinstance(value, float):
                value = round(value, STEP_DIGITS)
    except ValueError as exc:  # a FixedTrial without the parameter, or with a value of another kind
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"space {space.name!r} ({space.version}): parameter {name!r}: {detail}; rebuild the trial with the space it was made with"
        ) from None
    if not domain.contains(value):
        raise ConfigError(
            f"space {space.name!r} ({space.version}): parameter {name!r} = {show(value)} is outside its domain {show(domain.to_dict(), 200)}; rebuild the trial with the space it was made with"
        )
    return value
