"""Recipes: the five published pipelines load, train directly, and enqueue into a space."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from blood_automl.errors import ConfigError
from blood_automl.spaces import (
    BACKBONES,
    RECIPE_ONLY_BACKBONES,
    RECIPES,
    STAND_INS,
    TrialConfig,
    applicable_recipes,
    get_recipe,
    load_space,
    recipe_config,
    recipe_params,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The fields where enqueuing a recipe into the gpu space may differ from the recipe itself:
# a recipe-only backbone is replaced by its stand-in, the unfreeze fraction snaps to the grid,
# the fine-tuning epochs move into the space's range.
MAY_DIFFER = {"backbone", "unfreeze_fraction", "finetune_epochs"}


def test_five_recipes_with_their_backbones_and_notes() -> None:
    assert list(RECIPES) == [
        "mobilenetv3-se",
        "efficientnetv2l-focal",
        "convnextbase-selu",
        "convnextlarge-adamw",
        "resnet50-ensemble",
    ]
    backbones = [r.config.backbone for r in RECIPES.values()]
    assert backbones == [
        "MobileNetV3Large",
        "EfficientNetV2L",
        "ConvNeXtBase",
        "ConvNeXtLarge",
        "ResNet50",
    ]
    for recipe in RECIPES.values():
        assert isinstance(recipe.config, TrialConfig) and recipe.config.backbone in BACKBONES
        assert recipe.not_expressible and recipe.closest and recipe.title
        assert TrialConfig.from_dict(recipe.params) == recipe.config


def test_recipe_specifics() -> None:
    r1, r2, r3, r4, r5 = (recipe_config(name) for name in RECIPES)
    assert r1.se_block and r1.activation == "swish" and r1.class_weight == "balanced"
    assert r1.unfreeze_fraction == pytest.approx(
        min(1.0, 140 / BACKBONES["MobileNetV3Large"].layers), abs=1e-3
    )
    assert (r2.randaugment_ops, r2.optimizer, r2.loss, r2.head_lr, r2.finetune_lr) == (
        3,
        "adamw",
        "focal",
        1e-4,
        1e-5,
    )
    assert (
        r3.activation == "selu" and not r3.head_batch_norm and r3.l2 == 1.3e-5 and r3.mix == "mixup"
    )
    assert (r4.head_epochs, r4.finetune_epochs, r4.optimizer) == (10, 3, "adamw")
    assert r4.unfreeze_fraction == pytest.approx(30 / BACKBONES["ConvNeXtLarge"].layers, abs=1e-3)
    assert (r5.activation, r5.optimizer, r5.batch_size) == ("relu", "adam", 32)
    assert RECIPES["resnet50-ensemble"].members == ("ResNet50", "InceptionV3", "EfficientNetB0")
    assert recipe_config("resnet50-ensemble", member="InceptionV3") == dataclasses.replace(
        r5, backbone="InceptionV3"
    )


def test_unknown_recipe_or_member_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of: mobilenetv3-se"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match="no ensemble member 'VGG16'"):
        recipe_config("resnet50-ensemble", member="VGG16")


def test_recipe_only_backbones_are_in_the_registry_and_have_stand_ins_in_the_gpu_space() -> None:
    gpu = load_space("gpu")
    assert set(BACKBONES) >= RECIPE_ONLY_BACKBONES
    assert set(STAND_INS) == RECIPE_ONLY_BACKBONES
    assert all(stand_in in gpu.backbones for stand_in in STAND_INS.values())


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_params_are_accepted_by_the_gpu_space_they_are_enqueued_into(name: str) -> None:
    space = load_space("gpu")
    params = recipe_params(name, space)
    assert set(params) <= space.searched()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    trial = study.ask()
    config = suggest(trial, space)
    assert trial.params == params  # every enqueued value was taken, none resampled
    assert suggest(optuna.trial.FixedTrial(params), space) == config
    original = recipe_config(name)
    differ = {
        f.name
        for f in dataclasses.fields(TrialConfig)
        if getattr(config, f.name) != getattr(original, f.name)
    }
    assert differ <= MAY_DIFFER
    if original.backbone in space.backbones:
        assert config.backbone == original.backbone
    else:
        assert config.backbone == STAND_INS[original.backbone]
    assert config.unfreeze_fraction == pytest.approx(original.unfreeze_fraction, abs=0.025)


def test_only_params_the_space_suggests_are_given() -> None:
    params = recipe_params("convnextbase-selu", load_space("gpu"))
    assert "head_batch_norm" not in params  # selu
    assert "focal_gamma" not in params and "weight_decay" not in params
    assert params["mix"] == "mixup" and params["mix_alpha"] == 0.2


def test_numbers_outside_a_narrowed_space_are_moved_to_the_nearest_allowed_value(
    tmp_path: Path,
) -> None:
    path = tmp_path / "narrow.toml"
    path.write_text(
        "[params.head_lr]\nlow = 1e-4\nhigh = 5e-4\n[params.batch_size]\nchoices = [64, 128]\n[params.dropout]\nvalue = 0.1\n"
    )
    space = load_space(path)
    params = recipe_params("resnet50-ensemble", space)
    assert params["head_lr"] == 5e-4 and params["batch_size"] == 64 and "dropout" not in params
    assert suggest(optuna.trial.FixedTrial(params), space).dropout == 0.1


@pytest.mark.parametrize("preset", ["cpu", "smoke"])
def test_recipes_do_not_fit_the_cpu_and_smoke_presets(preset: str) -> None:
    space = load_space(preset)
    assert applicable_recipes(space) == {}
    with pytest.raises(
        ConfigError, match=f"recipe 'mobilenetv3-se' does not fit space '{preset}': it needs"
    ):
        recipe_params("mobilenetv3-se", space)


def test_a_categorical_value_the_space_drops_makes_the_recipe_not_applicable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nofocal.toml"
    path.write_text(
        '[params.loss]\nvalue = "crossentropy"\n[params.activation]\nexclude = ["selu"]\n'
    )
    space = load_space(path)
    with pytest.raises(ConfigError, match=r'it needs loss = "focal"'):
        recipe_params("efficientnetv2l-focal", space)
    with pytest.raises(ConfigError, match=r'it needs activation = "selu"'):
        recipe_params("convnextbase-selu", space)
    assert set(applicable_recipes(space)) == {
        "mobilenetv3-se",
        "convnextlarge-adamw",
        "resnet50-ensemble",
    }
    assert set(applicable_recipes(load_space("gpu"))) == set(RECIPES)
