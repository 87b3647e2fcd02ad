"""The names and defaults of the whole space, and how parameter values become a TrialConfig."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from blood_automl.spaces import (
    DEFAULTS,
    PARAM_NAMES,
    PARAMS,
    TrialConfig,
    default_params,
    load_space,
    suggest,
)
from blood_automl.spaces.params import config_from_values, config_to_values, dense_units

EXPECTED_DEFAULTS = {
    "backbone": "MobileNetV3Small",
    "se_block": False,
    "pooling": "avg",
    "dense_layers": 1,
    "dense_width": 256,
    "activation": "swish",
    "dropout": 0.3,
    "head_batch_norm": True,
    "l2": 1e-4,
    "l1_enabled": False,
    "l1": 0.0,
    "randaugment_ops": 2,
    "randaugment_magnitude": 0.5,
    "flip": True,
    "rotate90": True,
    "mix": "none",
    "mix_alpha": 0.2,
    "unfreeze_fraction": 1.0,
    "schedule": "single_phase",
    "batch_norm": "adapt",
    "head_epochs": 3,
    "head_lr": 1e-3,
    "finetune_epochs": 12,
    "finetune_lr": 2e-3,
    "warmup_epochs": 0,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "loss": "crossentropy",
    "label_smoothing": 0.0,
    "focal_gamma": 2.0,
    "class_weight": "none",
    "batch_size": 64,
}

# What a trial at the defaults puts in trial.params: the conditional parameters whose
# condition fails at the defaults (l1, mix_alpha, head_epochs and head_lr of two_phase,
# weight_decay, focal_gamma) are left out.
EXPECTED_DEFAULT_TRIAL_PARAMS = set(EXPECTED_DEFAULTS) - {
    "l1",
    "head_epochs",
    "head_lr",
    "mix_alpha",
    "weight_decay",
    "focal_gamma",
}


def test_names_and_defaults_are_exactly_these() -> None:
    assert list(PARAM_NAMES) == list(EXPECTED_DEFAULTS)
    assert {name: default for name, (default, _) in DEFAULTS.items()} == EXPECTED_DEFAULTS
    assert default_params() == EXPECTED_DEFAULTS


def test_every_default_has_a_one_line_reason() -> None:
    for name, (_, reason) in DEFAULTS.items():
        assert reason.strip() and "\n" not in reason and len(reason) < 120, name


def test_every_default_is_valid() -> None:
    for spec in PARAMS:
        assert spec.problem(spec.default) is None, spec.name


def test_fixed_trial_of_defaults_on_the_full_space_gives_the_trialconfig_defaults() -> None:
    trial = optuna.trial.FixedTrial(default_params())
    assert suggest(trial, load_space("gpu")) == TrialConfig()
    assert set(trial.params) == EXPECTED_DEFAULT_TRIAL_PARAMS


def test_the_parameters_cover_every_trialconfig_field() -> None:
    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    assert fields == (set(PARAM_NAMES) - {"dense_width", "l1_enabled"}) | {"dense_units"}


def test_conditions_refer_to_earlier_parameters() -> None:
    seen: set[str] = set()
    for spec in PARAMS:
        if spec.when is not None:
            assert spec.when.parent in seen, spec.name
        seen.add(spec.name)


@pytest.mark.parametrize(
    ("width", "layers", "expected"),
    [(256, 1, (256,)), (1024, 3, (1024, 512, 256)), (32, 3, (32, 16, 16)), (50, 2, (50, 25))],
)
def test_dense_units_halve_down_to_16(width: int, layers: int, expected: tuple[int, ...]) -> None:
    assert dense_units(width, layers) == expected


def test_values_and_config_round_trip() -> None:
    config = TrialConfig(dense_layers=3, dense_units=(512, 256, 128), l1=1e-5, loss="focal")
    values = config_to_values(config)
    assert values["dense_width"] == 512 and values["l1_enabled"] is True
    assert config_from_values(values) == config
    assert config_to_values(TrialConfig()) == EXPECTED_DEFAULTS
