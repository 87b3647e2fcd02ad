"""What a training hands back: ``TrainResult`` and ``TrainingDiverged``, importable without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial cannot produce a model."""


@dataclass
class TrainResult:
    """A trained model and what happened on the way."""

    model: keras.Model
    history: list[dict[str, Any]]
    best_step: int
    best_value: float | None
    val_metrics: dict[str, Any] | None
    # Epochs that led to the returned weights, per phase: what a refit should train.
    head_epochs: int
    finetune_epochs: int
    unfreeze_from: str | None
    trainable_layers: int
    seconds: float
    notes: list[str] = field(default_factory=list)
