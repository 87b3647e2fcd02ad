"""The five published hand-tuned pipelines, as configurations to train or to enqueue as first trials."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blood_automl.errors import ConfigError
from blood_automl.spaces.config import LEGACY_FIELDS, TrialConfig
from blood_automl.spaces.domains import Range, nearest
from blood_automl.spaces.params import PARAMS, applies, config_to_values
from blood_automl.spaces.registry import BACKBONES
from blood_automl.spaces.space import Space
from blood_automl.spaces.suggest import suggest
from blood_automl.spaces.validate import show

#: Registry backbones used only by recipes: too heavy for a 96x96 search (EfficientNetV2L,
#: ConvNeXtLarge) or superseded in the search by a sibling (ResNet50 by ResNet50V2,
#: InceptionV3, which needs at least 75x75 input, by EfficientNetB0).
RECIPE_ONLY_BACKBONES: frozenset[str] = frozenset(
    {"EfficientNetV2L", "ConvNeXtLarge", "ResNet50", "InceptionV3"}
)
#: The backbone of the search space that stands in for a recipe-only one when a recipe is
#: enqueued into a space without it.
STAND_INS: dict[str, str] = {
    "EfficientNetV2L": "EfficientNetV2S",
    "ConvNeXtLarge": "ConvNeXtBase",
    "ResNet50": "ResNet50V2",
    "InceptionV3": "EfficientNetB0",
}


@dataclass(frozen=True)
class Recipe:
    """A published pipeline: its closest :class:`TrialConfig` and what the space cannot express."""

    name: str
    title: str
    config: TrialConfig
    not_expressible: tuple[str, ...]
    closest: str
    members: tuple[str, ...] = ()  # backbones of an ensemble; ``config`` trains the first

    @property
    def params(self) -> dict[str, Any]:
        """The configuration as a plain ``TrialConfig``-compatible dict."""
        return self.config.to_dict()


def _published(**fields: Any) -> TrialConfig:
    """A published pipeline's configuration: head first, then fine-tuning with batch norm frozen."""
    return TrialConfig(**{**LEGACY_FIELDS, **fields})


def _unfrozen(backbone: str, layers: int) -> float:
    """``layers`` top layers of ``backbone`` as a fraction of its layers (the space's unit)."""
    return min(1.0, round(layers / BACKBONES[backbone].layers, 3))


_RECIPES: tuple[Recipe, ...] = (
    Recipe(
        name="mobilenetv3-se",
        title="MobileNetV3Large, squeeze-and-excitation head, swish dense layers, 140 layers unfrozen",
        config=_published(
            backbone="MobileNetV3Large", se_block=True, dense_layers=2, dense_units=(256, 128),
            activation="swish", dropout=0.3, head_batch_norm=True, l2=1e-4,
            randaugment_ops=2, randaugment_magnitude=0.3, flip=True, rotate90=True,
            unfreeze_fraction=_unfrozen("MobileNetV3Large", 140), head_epochs=10,
            finetune_epochs=10, head_lr=1e-3, finetune_lr=1e-5, class_weight="balanced",
        ),
        not_expressible=("random zoom, brightness, contrast and noise layers", "rotations by arbitrary angles"),
        closest="RandAugment, 2 ops at magnitude 0.3 (its brightness, contrast and geometric ops), plus flips and 90-degree rotations; 140 layers as a fraction of the backbone's layers",
    ),
    Recipe(
        name="efficientnetv2l-focal",
        title="EfficientNetV2L, two dense layers, RandAugment (3 ops), AdamW, focal loss",
        config=_published(
            backbone="EfficientNetV2L", dense_layers=2, dense_units=(512, 256), activation="swish",
            dropout=0.4, randaugment_ops=3, randaugment_magnitude=0.5, optimizer="adamw",
            weight_decay=1e-4, loss="focal", focal_gamma=2.0, head_epochs=10, finetune_epochs=10,
            head_lr=1e-4, finetune_lr=1e-5,
        ),
        not_expressible=("cosine decay with warm restarts while fine-tuning",),
        closest="the trainer's single cosine decay from finetune_lr = 1e-5",
    ),
    Recipe(
        name="convnextbase-selu",
        title="ConvNeXtBase, SELU dense layers with dropout, MixUp + CutMix + RandAugment + AugMix, class weights",
        config=_published(
            backbone="ConvNeXtBase", dense_layers=2, dense_units=(512, 256), activation="selu",
            dropout=0.2, head_batch_norm=False, l2=1.3e-5, l1=0.0, randaugment_ops=2,
            randaugment_magnitude=0.5, mix="mixup", mix_alpha=0.2, head_epochs=10,
            finetune_epochs=10, finetune_lr=1e-5, class_weight="balanced",
        ),
        not_expressible=(
            "AugMix",
            "MixUp and CutMix together (a trial uses one of them)",
            "a different regularizer per phase: L2 1.3e-5 for the head phase, L1L2(l1=1.5e-4, l2=4e-4) while fine-tuning",
        ),
        closest="MixUp (alpha 0.2) with RandAugment (2 ops), and the head phase's L2 1.3e-5 in both phases",
    ),
    Recipe(
        name="convnextlarge-adamw",
        title="ConvNeXtLarge, RandAugment + flips, AdamW, 10 epochs frozen then 3 with the last 30 layers unfrozen",
        config=_published(
            backbone="ConvNeXtLarge", randaugment_ops=2, randaugment_magnitude=0.5, flip=True,
            rotate90=False, optimizer="adamw", weight_decay=4e-3, head_epochs=10,
            finetune_epochs=3, unfreeze_fraction=_unfrozen("ConvNeXtLarge", 30),
            head_lr=1e-3, finetune_lr=1e-5,
        ),
        not_expressible=("unfreezing an exact number of layers",),
        closest="30 layers as a fraction of the backbone's layers, which the trainer aligns to whole blocks",
    ),
    Recipe(
        name="resnet50-ensemble",
        title="ResNet50 / InceptionV3 / EfficientNetB0 ensemble baseline, dense ReLU head with L2, Adam, batch 32",
        config=_published(
            backbone="ResNet50", dense_layers=1, dense_units=(256,), activation="relu",
            dropout=0.3, head_batch_norm=False, l2=1e-4, randaugment_ops=0, optimizer="adam",
            head_lr=1e-3, finetune_lr=1e-4, batch_size=32, head_epochs=10, finetune_epochs=10,
        ),
        not_expressible=("an ensemble averaging ResNet50, InceptionV3 and EfficientNetB0",),
        closest="the ResNet50 member alone; recipe_config(name, member=...) gives the others",
        members=("ResNet50", "InceptionV3", "EfficientNetB0"),
    ),
)  # fmt: skip

#: Recipe name -> recipe, in the order of the published pipelines.
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``, or a :class:`ConfigError` listing the recipes."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}") from None


def recipe_config(name: str, member: str | None = None) -> TrialConfig:
    """The configuration to train recipe ``name`` directly (an ensemble ``member`` by backbone)."""
    recipe = get_recipe(name)
    if member is None:
        return recipe.config
    if member not in recipe.members:
        known = ", ".join(recipe.members) or "none"
        raise ConfigError(f"recipe {name!r} has no ensemble member {member!r}; members: {known}")
    return dataclasses.replace(recipe.config, backbone=member)


class _Misfit(Exception):
    def __init__(self, name: str, value: Any, allowed: Sequence[Any]) -> None:
        super().__init__(name)
        self.name, self.value, self.allowed = name, value, list(allowed)


class _SnapTrial:
    """A trial that answers each question with the recipe's value, moved into the space.

    A categorical value the space does not allow is a misfit, or with ``lenient`` the
    space's first choice.
    """

    def __init__(self, target: dict[str, Any], lenient: bool = False) -> None:
        self.target = target
        self.lenient = lenient
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        want = self.target[name]
        exact = [c for c in choices if type(c) is type(want) and c == want]
        if exact:
            value = exact[0]
        elif all(isinstance(c, int | float) and not isinstance(c, bool) for c in (want, *choices)):
            value = nearest(tuple(choices), want)
        elif self.lenient:
            value = choices[0]
        else:
            raise _Misfit(name, want, choices)
        self.params[name] = value
        return value

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        value = int(Range(low, high, log, None if step == 1 else step).snap(self.target[name]))
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = float(Range(float(low), float(high), log, step).snap(float(self.target[name])))
        self.params[name] = value
        return value


def recipe_params(recipe: Recipe | str, space: Space) -> dict[str, Any]:
    """The Optuna params that enqueue ``recipe`` into a study of ``space``.

    Only parameters the space suggests for this configuration are given (fixed and
    inactive ones are left out). A recipe-only backbone missing from the space is replaced
    by its stand-in (:data:`STAND_INS`); numbers outside the space are moved to the
    nearest allowed value; a categorical value the space does not allow (a backbone
    without stand-in, an optimizer, ...) makes the recipe not applicable: a
    :class:`ConfigError` says which.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    target = config_to_values(recipe.config)
    backbone = recipe.config.backbone
    if backbone not in space.backbones and STAND_INS.get(backbone) in space.backbones:
        target["backbone"] = STAND_INS[backbone]
    trial = _SnapTrial(target)
    try:
        got = config_to_values(suggest(trial, space))
        for spec in PARAMS:  # fixed categorical values must agree too
            if (
                spec.kind in ("str", "bool")
                and applies(spec, got)
                and got[spec.name] != target[spec.name]
            ):
                raise _Misfit(spec.name, target[spec.name], [got[spec.name]])
    except _Misfit as misfit:
        raise ConfigError(
            f"recipe {recipe.name!r} does not fit space {space.name!r}: it needs {misfit.name} = "
            f"{show(misfit.value)}, and the space allows only {show(misfit.allowed, 200)}; "
            f"train it with recipe_config({recipe.name!r}) or use a space that allows it"
        ) from None
    return trial.params


#: The name under which the default configuration is queued as a study's first trial.
DEFAULT_START = "default"


def default_start(space: Space) -> dict[str, Any]:
    """The Optuna params of the default configuration (``TrialConfig()``) moved into ``space``.

    Every parameter's default (see ``spaces.params``) is the first try measured best on
    blood-cell images; queued as the first trial, it gives the sampler a strong point to
    start from. Numbers outside the space move to its nearest value; a choice the space
    does not offer becomes its first choice.
    """
    trial = _SnapTrial(config_to_values(TrialConfig()), lenient=True)
    suggest(trial, space)
    return trial.params


def applicable_recipes(space: Space) -> dict[str, dict[str, Any]]:
    """Recipe name -> :func:`recipe_params`, for the recipes that fit ``space`` (warm start)."""
    out: dict[str, dict[str, Any]] = {}
    for name in RECIPES:
        try:
            out[name] = recipe_params(name, space)
        except ConfigError:
            continue
    return out
