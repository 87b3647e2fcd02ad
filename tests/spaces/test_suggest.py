"""suggest: valid configurations for random trials, conditional parameters, refit by FixedTrial."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import optuna
import pytest

from blood_automl.errors import ConfigError
from blood_automl.spaces import (
    BACKBONES,
    PARAMS,
    PRESETS,
    Space,
    TrialConfig,
    config_to_values,
    default_params,
    load_space,
    suggest,
)
from blood_automl.spaces.params import MIN_DENSE_WIDTH

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_TRIALS = 200

# When each conditional parameter must be in trial.params, as a test on the configuration.
CONDITIONS = {
    "head_batch_norm": lambda c: c.activation != "selu",
    "l1": lambda c: c.l1 > 0,
    "randaugment_magnitude": lambda c: c.randaugment_ops > 0,
    "mix_alpha": lambda c: c.mix != "none",
    "finetune_epochs": lambda c: c.unfreeze_fraction > 0,
    "finetune_lr": lambda c: c.unfreeze_fraction > 0,
    "weight_decay": lambda c: c.optimizer in ("adamw", "lion"),
    "label_smoothing": lambda c: c.loss == "crossentropy",
    "focal_gamma": lambda c: c.loss == "focal",
}


def random_trials(space: Space, n: int = N_TRIALS) -> list[tuple[optuna.trial.Trial, TrialConfig]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    out = []
    for i in range(n):
        trial = study.ask()
        config = suggest(trial, space)
        study.tell(trial, float(i % 7))
        out.append((trial, config))
    return out


def assert_valid(config: TrialConfig, space: Space) -> None:
    values = config_to_values(config)
    assert config.backbone in BACKBONES
    assert len(config.dense_units) == config.dense_layers
    for a, b in zip(config.dense_units, config.dense_units[1:], strict=False):
        assert b == max(MIN_DENSE_WIDTH, a // 2)
    if config.activation == "selu":
        assert config.head_batch_norm is False
    if config.unfreeze_fraction == 0:
        assert config.finetune_epochs == 0
    for spec in PARAMS:
        active = spec.when is None or spec.when.test(values[spec.when.parent])
        if active:
            assert space[spec.name].contains(values[spec.name]), (spec.name, values[spec.name])
        else:
            assert values[spec.name] == spec.inactive_value, spec.name


@pytest.mark.parametrize("preset", PRESETS)
def test_random_trials_give_valid_configs_and_conditional_params_only_when_they_apply(
    preset: str,
) -> None:
    space = load_space(preset)
    seen: set[str] = set()
    for trial, config in random_trials(space):
        assert_valid(config, space)
        params = set(trial.params)
        seen |= params
        assert params <= space.searched()
        assert not params & set(space.fixed())
        for name, applies in CONDITIONS.items():
            if name in space.searched():
                assert (name in params) == applies(config), (name, config)
        for name, value in space.fixed().items():
            spec = next(p for p in PARAMS if p.name == name)
            if spec.when is None:
                assert config_to_values(config)[name] == value
    assert seen == space.searched()


@pytest.mark.parametrize("preset", PRESETS)
def test_fixed_trial_of_a_trials_params_rebuilds_the_same_config(preset: str) -> None:
    space = load_space(preset)
    trials = random_trials(space, 60)
    for trial, config in trials:
        assert suggest(optuna.trial.FixedTrial(trial.params), space) == config
    # As refit does it: the best trial's params, through a JSON-stored copy of the space.
    best = max(trials, key=lambda tc: tc[0].number % 7)
    rebuilt = Space.from_dict(space.to_dict())
    assert suggest(optuna.trial.FixedTrial(dict(best[0].params)), rebuilt) == best[1]


def test_the_study_best_params_rebuild_the_best_trial() -> None:
    space = load_space("gpu")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    configs = {}
    for i in range(30):
        trial = study.ask()
        configs[trial.number] = suggest(trial, space)
        study.tell(trial, (i * 37 % 11) / 11)
    assert (
        suggest(optuna.trial.FixedTrial(study.best_params), space)
        == configs[study.best_trial.number]
    )


def with_defaults(**changes: Any) -> dict[str, Any]:
    params = default_params()
    params.update(changes)
    return params


def test_selu_forces_head_batch_norm_off_without_asking() -> None:
    trial = optuna.trial.FixedTrial(with_defaults(activation="selu", head_batch_norm=True))
    config = suggest(trial, load_space("gpu"))
    assert config.head_batch_norm is False and "head_batch_norm" not in trial.params


def test_no_unfreezing_means_no_finetune_phase() -> None:
    trial = optuna.trial.FixedTrial(with_defaults(unfreeze_fraction=0.0))
    config = suggest(trial, load_space("gpu"))
    assert config.finetune_epochs == 0 and config.finetune_lr == TrialConfig().finetune_lr
    assert not {"finetune_epochs", "finetune_lr"} & set(trial.params)


def test_conditional_parameters_are_asked_when_they_apply() -> None:
    params = with_defaults(
        loss="focal",
        focal_gamma=3.0,
        optimizer="lion",
        weight_decay=1e-3,
        mix="cutmix",
        mix_alpha=0.5,
        l1_enabled=True,
        l1=1e-5,
        randaugment_ops=0,
    )
    trial = optuna.trial.FixedTrial(params)
    config = suggest(trial, load_space("gpu"))
    assert (config.focal_gamma, config.weight_decay, config.mix_alpha, config.l1) == (
        3.0,
        1e-3,
        0.5,
        1e-5,
    )
    assert {"focal_gamma", "weight_decay", "mix_alpha", "l1"} <= set(trial.params)
    assert not {"label_smoothing", "randaugment_magnitude"} & set(trial.params)
    assert config.label_smoothing == 0.0


def test_fixed_values_are_applied_but_not_suggested() -> None:
    trial = optuna.trial.FixedTrial({**default_params(), "schedule": "two_phase"})
    config = suggest(trial, load_space("cpu"))
    assert (config.head_epochs, config.finetune_epochs, config.batch_size) == (2, 12, 64)
    assert not {"head_epochs", "finetune_epochs", "batch_size", "flip"} & set(trial.params)


@pytest.mark.filterwarnings("ignore:The value .* is out of the range:UserWarning")
@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"dropout": 0.9}, "'dropout' = 0.9 is outside"),
        ({"backbone": "InceptionV3"}, "'backbone'"),
        ({"activation": "gelu"}, "'activation'"),
        ({"flip": 1}, "'flip' = 1"),
    ],
)
def test_params_that_do_not_fit_the_space_are_a_config_error(
    changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match="space 'gpu'") as info:
        suggest(optuna.trial.FixedTrial(with_defaults(**changes)), load_space("gpu"))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_missing_param_is_a_config_error() -> None:
    params = default_params()
    del params["dropout"]
    with pytest.raises(ConfigError, match="parameter 'dropout'"):
        suggest(optuna.trial.FixedTrial(params), load_space("gpu"))


def test_suggest_defaults_to_the_gpu_preset() -> None:
    assert suggest(optuna.trial.FixedTrial(default_params())) == TrialConfig()


def test_spaces_imports_neither_tensorflow_nor_keras() -> None:
    code = "import sys, blood_automl.spaces as s; s.load_space('gpu'); print(sorted(m for m in ('tensorflow', 'keras', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
