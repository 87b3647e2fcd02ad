"""The fake trainer the search tests run stands in for the real one: same functions, same parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from .test_scale import fake_trainer

pytest.importorskip("tensorflow")

#: What the fake provides, each a function of the real trainer's.
PROVIDED = (
    "train",
    "release",
    "configure",
    "check_weights",
    "weights_mode",
    "visible_gpus",
    "hide_gpus",
)


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Each parameter's name, kind and default (the fake's annotations may be looser)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name", PROVIDED)
def test_the_fake_takes_the_real_parameters(name: str) -> None:
    from blood_automl import trainer as real

    real_function = getattr(real, name)
    fake_function = getattr(fake_trainer(), name)
    assert fake_function is not real_function
    assert parameters(fake_function) == parameters(real_function)


def test_the_fake_returns_the_real_result_type() -> None:
    from blood_automl.trainer.fit import TrainResult

    assert fake_trainer().TrainResult is TrainResult
