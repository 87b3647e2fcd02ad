"""The trainer: a TrialConfig plus prepared data in, a trained and measured Keras model out.

Importing this package imports TensorFlow; the CLI, ``data``, ``spaces`` and ``studies``
never do.
"""

from __future__ import annotations

from blood_automl.trainer.fit import (
    TrainingDiverged,
    TrainResult,
    class_weights,
    make_dataset,
    make_loss,
    predict,
    train,
)
from blood_automl.trainer.metrics import OBJECTIVES, compute_metrics, objective_value
from blood_automl.trainer.model import (
    block_starts,
    build_model,
    check_weights,
    keras_cache_dir,
    set_trainable,
    unfreeze_index,
    weights_mode,
)
from blood_automl.trainer.runtime import configure, release, seed_everything

__all__ = [
    "OBJECTIVES",
    "TrainResult",
    "TrainingDiverged",
    "block_starts",
    "build_model",
    "check_weights",
    "class_weights",
    "compute_metrics",
    "configure",
    "keras_cache_dir",
    "make_dataset",
    "make_loss",
    "objective_value",
    "predict",
    "release",
    "seed_everything",
    "set_trainable",
    "train",
    "unfreeze_index",
    "weights_mode",
]
