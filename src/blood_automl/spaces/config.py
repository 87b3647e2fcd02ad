"""TrialConfig: one point of the search space, everything the trainer needs to build and fit a model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Activation = Literal["relu", "swish", "selu"]
Pooling = Literal["avg", "max"]
Mix = Literal["none", "mixup", "cutmix"]
Optimizer = Literal["adam", "adamw", "lion"]
Loss = Literal["crossentropy", "focal"]
ClassWeight = Literal["none", "balanced", "sqrt"]
Schedule = Literal["two_phase", "single_phase"]
BatchNorm = Literal["frozen", "adapt"]

#: Values of the fields a configuration recorded before they existed: they reproduce how
#: such a configuration was trained (head, then fine-tuning; batch norm frozen; no warm-up).
LEGACY_FIELDS: dict[str, Any] = {
    "schedule": "two_phase",
    "batch_norm": "frozen",
    "warmup_epochs": 0,
}


@dataclass(frozen=True)
class TrialConfig:
    """A complete, immutable model-and-training configuration.

    Every field has a default that is a sensible first try on 96x96 blood-cell images;
    ``spaces.suggest`` fills the fields from an Optuna trial.
    """

    # Backbone: a key of ``spaces.registry.BACKBONES``.
    backbone: str = "MobileNetV3Small"
    # Head.
    se_block: bool = False
    pooling: Pooling = "avg"
    dense_layers: int = 1
    dense_units: tuple[int, ...] = (256,)
    activation: Activation = "swish"
    dropout: float = 0.3
    head_batch_norm: bool = True
    l2: float = 1e-4
    l1: float = 0.0
    # Augmentation (applied to training batches only).
    randaugment_ops: int = 2
    randaugment_magnitude: float = 0.5
    flip: bool = True
    rotate90: bool = True
    mix: Mix = "none"
    mix_alpha: float = 0.2
    # Fine-tuning: fraction of the backbone's layers, from the top, aligned to whole blocks.
    unfreeze_fraction: float = 1.0
    # "single_phase": head and unfrozen backbone train together from the first epoch;
    # "two_phase": the head trains alone first (head_epochs at head_lr), then fine-tuning.
    schedule: Schedule = "single_phase"
    # Batch norm of the unfrozen backbone: kept frozen, or adapting its statistics to the data.
    batch_norm: BatchNorm = "adapt"
    # Optimization. finetune_epochs is the most epochs of the phase that trains the backbone
    # (early stopping ends it on a plateau); its learning rate warms up over warmup_epochs.
    head_epochs: int = 3
    finetune_epochs: int = 12
    head_lr: float = 1e-3
    finetune_lr: float = 2e-3
    warmup_epochs: int = 0
    optimizer: Optimizer = "adam"
    weight_decay: float = 0.0
    loss: Loss = "crossentropy"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weight: ClassWeight = "none"
    batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["dense_units"] = list(self.dense_units)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        A configuration recorded before a field existed gets the field's legacy value
        (:data:`LEGACY_FIELDS`), so it trains as it did then.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            from blood_automl.errors import ConfigError

            raise ConfigError(
                f"unknown TrialConfig fields {unknown}; known fields: {sorted(names)}"
            )
        kwargs = {**LEGACY_FIELDS, **values}
        if "dense_units" in kwargs:
            kwargs["dense_units"] = tuple(int(u) for u in kwargs["dense_units"])
        return cls(**kwargs)
