"""The three forms a parameter takes in a space: a fixed value, a set of choices, a range."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from blood_automl.spaces.params import When

#: Digits a stepped float keeps, so that 0.1 * 3 is 0.3 in every configuration.
STEP_DIGITS = 10


@dataclass(frozen=True)
class Fixed:
    """A value that is applied but not searched (it does not appear in ``trial.params``)."""

    value: Any

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form: ``{"value": ...}``."""
        return {"value": self.value}

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is the fixed value (of the same type)."""
        return type(value) is type(self.value) and value == self.value


@dataclass(frozen=True)
class Choices:
    """A categorical parameter: ``trial.suggest_categorical`` over ``options``."""

    options: tuple[Any, ...]

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form: ``{"choices": [...]}``."""
        return {"choices": list(self.options)}

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the options (of the same type)."""
        return any(type(value) is type(o) and value == o for o in self.options)


@dataclass(frozen=True)
class Range:
    """A numeric range: ``trial.suggest_int`` or ``suggest_float`` with ``log`` or ``step``."""

    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form: ``{"low": ..., "high": ..., "log": ..., ["step": ...]}``."""
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range and, with a step, on its grid."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(self.low, int) and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-8

    def snap(self, value: float) -> int | float:
        """The allowed value nearest ``value`` (clipped to the range, moved onto the grid)."""
        v = min(max(value, self.low), self.high)
        if self.step is not None:
            v = self.low + round((v - self.low) / self.step) * self.step
            v = min(v, self.high)
        if isinstance(self.low, int):
            return round(v)
        return round(v, STEP_DIGITS) if self.step is not None else float(v)


Domain = Fixed | Choices | Range


def domain_values(domain: Domain) -> tuple[Any, ...] | None:
    """The values a domain allows, or None for a range."""
    if isinstance(domain, Fixed):
        return (domain.value,)
    if isinstance(domain, Choices):
        return domain.options
    return None


def can_meet(when: When, domain: Domain) -> bool:
    """Whether some value of the parent's ``domain`` satisfies the condition ``when``."""
    values = domain_values(domain)
    if values is None:
        assert isinstance(domain, Range)
        values = (domain.low, domain.high)
    return any(when.test(v) for v in values)


def nearest(options: tuple[Any, ...], value: float) -> Any:
    """The numeric option nearest ``value`` (by ratio when all are positive)."""

    def distance(o: float) -> float:
        if o > 0 and value > 0:
            return abs(math.log(o) - math.log(value))
        return abs(o - value)

    return min(options, key=distance)
