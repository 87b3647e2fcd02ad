"""The hyperparameters of the search: names, types, hard limits, defaults with reasons, conditions."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from blood_automl.spaces.config import (
    Activation,
    BatchNorm,
    ClassWeight,
    Loss,
    Mix,
    Optimizer,
    Pooling,
    Schedule,
    TrialConfig,
)
from blood_automl.spaces.registry import BACKBONES

#: Side of the square input images; backbones needing more are not offered.
IMAGE_SIZE = 96
#: Dense layers after the first halve the previous width, down to this.
MIN_DENSE_WIDTH = 16

Kind = Literal["str", "bool", "int", "float"]


class _Unset:
    """Marks a :class:`ParamSpec` whose inactive value is its default."""

    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Unset()


@dataclass(frozen=True)
class When:
    """A parameter applies only when ``test`` holds for an earlier parameter's value.

    Tests on numbers must be monotone thresholds (``n > 0``): a range reaches the
    condition when one of its ends does.
    """

    parent: str
    test: Callable[[Any], bool]
    text: str


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: its kind, the limits any space must keep to, and its default."""

    name: str
    kind: Kind
    default: Any
    reason: str
    values: tuple[str, ...] = ()  # the only values a "str" parameter may take
    low: float | None = None  # hard limits of an "int" or "float" parameter
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    when: When | None = None
    inactive: Any = _DEFAULT  # the value used when ``when`` fails (else ``default``)
    meaning: str = ""  # what the parameter does, for the documentation and the template

    @property
    def inactive_value(self) -> Any:
        """The value the configuration gets when this parameter does not apply."""
        return self.default if isinstance(self.inactive, _Unset) else self.inactive

    def limits(self) -> str:
        """The valid values as text, e.g. ``[0, 1)`` or ``'avg', 'max'``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return ", ".join(repr(v) for v in self.values)
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a valid value of this parameter, or None when it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "str":
            if not isinstance(value, str):
                return "must be a string"
            return None if value in self.values else f"is not one of {self.limits()}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be an integer" if self.kind == "int" else "must be a number"
        if self.kind == "int" and not isinstance(value, int):
            return "must be an integer"
        if not math.isfinite(value):
            return "must be a finite number"
        assert self.low is not None and self.high is not None
        below = value <= self.low if self.low_open else value < self.low
        above = value >= self.high if self.high_open else value > self.high
        if below or above:
            return f"is outside the valid limits {self.limits()}"
        return None


def _num(x: float | None) -> str:
    return "None" if x is None else (str(int(x)) if float(x).is_integer() else repr(x))


_USABLE_BACKBONES = tuple(name for name, spec in BACKBONES.items() if spec.min_size <= IMAGE_SIZE)
_UNFROZEN = When("unfreeze_fraction", lambda f: f > 0, "unfreeze_fraction > 0")
_TWO_PHASE = When("schedule", lambda s: s == "two_phase", "schedule == 'two_phase'")

#: Every hyperparameter in the order ``suggest`` asks for them (parents before children).
PARAMS: tuple[ParamSpec, ...] = (
    # Backbone.
    ParamSpec("backbone", "str", "MobileNetV3Small", "small and fast, and accurate enough at 96x96 to be a sound first try", values=_USABLE_BACKBONES, meaning="the ImageNet network under the head (frozen, then partly fine-tuned)"),
    # Head.
    ParamSpec("se_block", "bool", False, "squeeze-and-excitation adds head weights; off until the search shows it pays", meaning="a squeeze-and-excitation block on the backbone's features before pooling"),
    ParamSpec("pooling", "str", "avg", "global average pooling is the standard, most stable reduction of backbone features", values=get_args(Pooling), meaning="how the backbone's feature map is reduced to a vector: average or max"),
    ParamSpec("dense_layers", "int", 1, "one dense layer is usually enough on top of ImageNet features", low=1, high=3, meaning="how many dense layers the head has"),
    ParamSpec("dense_width", "int", 256, "wide enough for 8 classes without overfitting a few thousand images; later layers halve it", low=MIN_DENSE_WIDTH, high=4096, meaning="units of the first dense layer; each later one has half as many"),
    ParamSpec("activation", "str", "swish", "swish matches the activations of modern backbones and trains smoothly", values=get_args(Activation), meaning="activation function of the head's dense layers"),
    ParamSpec("dropout", "float", 0.3, "moderate dropout curbs overfitting of the head on a few thousand images", low=0.0, high=1.0, high_open=True, meaning="dropout rate after each dense layer of the head"),
    ParamSpec("head_batch_norm", "bool", True, "batch norm steadies the head at the higher head-phase learning rate", when=When("activation", lambda a: a != "selu", "activation != 'selu'"), inactive=False, meaning="batch normalisation after each dense layer of the head"),
    ParamSpec("l2", "float", 1e-4, "light L2 on the head kernels, the usual transfer-learning setting", low=0.0, high=1.0, meaning="L2 penalty on the head's dense kernels"),
    ParamSpec("l1_enabled", "bool", False, "L1 sparsity rarely helps a small head, so it is off unless the search turns it on", meaning="whether an L1 penalty is added to the head's dense kernels"),
    ParamSpec("l1", "float", 0.0, "no L1 penalty unless l1_enabled", low=0.0, high=1.0, when=When("l1_enabled", bool, "l1_enabled"), meaning="the L1 penalty on the head's dense kernels"),
    # Augmentation.
    ParamSpec("randaugment_ops", "int", 2, "two ops per image is RandAugment's usual setting; weak augmentation failed on hidden test sets", low=0, high=5, meaning="RandAugment operations applied to each training image (0: none)"),
    ParamSpec("randaugment_magnitude", "float", 0.5, "mid strength: real gains without destroying cell texture", low=0.0, high=1.0, when=When("randaugment_ops", lambda n: n > 0, "randaugment_ops > 0"), meaning="strength of the RandAugment operations, 0 to 1"),
    ParamSpec("flip", "bool", True, "cells have no orientation, so flips are free label-preserving data", meaning="random horizontal and vertical flips of training images"),
    ParamSpec("rotate90", "bool", True, "cells have no orientation, so 90-degree rotations are free label-preserving data", meaning="random rotations of training images by multiples of 90 degrees"),
    ParamSpec("mix", "str", "none", "MixUp/CutMix slow convergence in the short budgets of a search", values=get_args(Mix), meaning="mixing of training images and labels: none, MixUp or CutMix"),
    ParamSpec("mix_alpha", "float", 0.2, "alpha 0.2 is the MixUp paper's choice for ImageNet-scale training", low=0.0, high=10.0, low_open=True, when=When("mix", lambda m: m != "none", "mix != 'none'"), meaning="alpha of the Beta distribution that draws the MixUp / CutMix proportions"),
    # Schedule: what trains, in which phases, for how many epochs.
    ParamSpec("unfreeze_fraction", "float", 1.0, "the whole network, trained from the first epoch, beat partial fine-tuning on PBC images", low=0.0, high=1.0, meaning="fraction of the backbone's top blocks that train (0: the head alone, 1: the whole network)"),
    ParamSpec("schedule", "str", "single_phase", "one phase with warm-up reaches the fine-tuned accuracy without spending epochs on a head-only phase", values=get_args(Schedule), when=_UNFROZEN, inactive="two_phase", meaning="single_phase: head and unfrozen blocks train together from the first epoch; two_phase: the head trains alone first, then fine-tuning"),
    ParamSpec("batch_norm", "str", "adapt", "blood-cell images are far from ImageNet's statistics; adapting batch norm lets the features follow them", values=get_args(BatchNorm), when=_UNFROZEN, inactive="frozen", meaning="batch norm of the unfrozen blocks: frozen (ImageNet statistics) or adapt (trains, statistics follow the data at momentum 0.9)"),
    ParamSpec("head_epochs", "int", 3, "a frozen-backbone head converges in a few epochs; early stopping ends it sooner", low=1, high=1000, when=_TWO_PHASE, meaning="epochs of the head phase (backbone frozen); two_phase only"),
    ParamSpec("head_lr", "float", 1e-3, "Adam's standard learning rate suits a freshly initialised head", low=0.0, high=1.0, low_open=True, when=_TWO_PHASE, meaning="learning rate of the head phase; two_phase only"),
    ParamSpec("finetune_epochs", "int", 12, "the most epochs of backbone training; early stopping and the pruner end a trial sooner", low=0, high=1000, when=_UNFROZEN, inactive=0, meaning="most epochs of the phase that trains the backbone (early stopping ends it on a plateau)"),
    ParamSpec("finetune_lr", "float", 2e-3, "whole-network training with adapting batch norm: 2e-3 beat 1e-3 and 5e-4 (bench/README.md)", low=0.0, high=1.0, low_open=True, when=_UNFROZEN, meaning="peak learning rate of the phase that trains the backbone (linear warm-up, then cosine decay over finetune_epochs)"),
    ParamSpec("warmup_epochs", "int", 0, "no warm-up: one epoch of it lost 2 points on PBC images (bench/README.md); searched on a GPU", low=0, high=100, when=_UNFROZEN, inactive=0, meaning="epochs of linear learning-rate warm-up at the start of the phase that trains the backbone"),
    # Optimization.
    ParamSpec("optimizer", "str", "adam", "Adam is forgiving of its learning rate, the safest first try", values=get_args(Optimizer), meaning="the optimizer of both phases"),
    ParamSpec("weight_decay", "float", 0.0, "Adam has no decoupled weight decay; it is searched for adamw and lion", low=0.0, high=1.0, when=When("optimizer", lambda o: o in ("adamw", "lion"), "optimizer in ('adamw', 'lion')"), meaning="decoupled weight decay of adamw and lion"),
    ParamSpec("loss", "str", "crossentropy", "cross-entropy is the standard; focal loss is searched for the rarer classes", values=get_args(Loss), meaning="the loss: cross-entropy or focal loss"),
    ParamSpec("label_smoothing", "float", 0.0, "hard labels by default; smoothing is searched", low=0.0, high=1.0, high_open=True, when=When("loss", lambda s: s == "crossentropy", "loss == 'crossentropy'"), meaning="label smoothing of the cross-entropy loss"),
    ParamSpec("focal_gamma", "float", 2.0, "gamma 2 is the focal-loss paper's best value", low=0.0, high=10.0, when=When("loss", lambda s: s == "focal", "loss == 'focal'"), meaning="focusing parameter gamma of the focal loss"),
    ParamSpec("class_weight", "str", "none", "the PBC classes are roughly balanced after cleaning; weighting is searched", values=get_args(ClassWeight), meaning="weighting of classes in the loss: none, inverse frequency (balanced) or its square root (sqrt)"),
    ParamSpec("batch_size", "int", 64, "64 fits every backbone at 96x96 on a CPU or a GPU and keeps batch statistics steady", low=1, high=4096, meaning="training images per batch"),
)  # fmt: skip

#: Parameter name -> its spec.
PARAM_SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
#: The names of all parameters, in suggestion order.
PARAM_NAMES: tuple[str, ...] = tuple(PARAM_SPECS)
#: Parameter name -> (default, one-line reason).
DEFAULTS: dict[str, tuple[Any, str]] = {p.name: (p.default, p.reason) for p in PARAMS}

# Parameters that are not TrialConfig fields, and the field they shape.
_DERIVED = {"dense_width": "dense_units", "l1_enabled": "l1"}


def default_params() -> dict[str, Any]:
    """Every parameter at its default: ``FixedTrial(default_params())`` gives ``TrialConfig()``."""
    return {name: default for name, (default, _) in DEFAULTS.items()}


def dense_units(width: int, layers: int) -> tuple[int, ...]:
    """The widths of ``layers`` dense layers: ``width``, then each half the previous (min 16)."""
    units = [width]
    for _ in range(layers - 1):
        units.append(max(MIN_DENSE_WIDTH, units[-1] // 2))
    return tuple(units)


def config_from_values(values: dict[str, Any]) -> TrialConfig:
    """Build the :class:`TrialConfig` of a full set of parameter values."""
    fields = {k: v for k, v in values.items() if k not in _DERIVED}
    fields["dense_units"] = dense_units(values["dense_width"], values["dense_layers"])
    return TrialConfig(**fields)


def config_to_values(config: TrialConfig) -> dict[str, Any]:
    """The parameter values of a configuration (inverse of :func:`config_from_values`)."""
    fields = config.to_dict()
    values = {name: fields[name] for name in PARAM_NAMES if name not in _DERIVED}
    values["dense_width"] = int(config.dense_units[0]) if config.dense_units else 0
    values["l1_enabled"] = config.l1 > 0
    return {name: values[name] for name in PARAM_NAMES}


def applies(spec: ParamSpec, values: dict[str, Any]) -> bool:
    """Whether ``spec`` applies given the values of the earlier parameters."""
    return spec.when is None or bool(spec.when.test(values[spec.when.parent]))
