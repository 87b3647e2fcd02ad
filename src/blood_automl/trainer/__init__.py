"""The trainer: a TrialConfig plus prepared data in, a trained and measured Keras model out.

Importing this package does not import TensorFlow: the names below are loaded from their
modules (which do) when first used, so ``trainer.quiet`` can hide TensorFlow's start-up
lines before it loads. The CLI, ``data``, ``spaces`` and ``studies`` never import it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blood_automl.trainer.fit import (
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
    from blood_automl.trainer.results import TrainingDiverged, TrainResult
    from blood_automl.trainer.runtime import (
        configure,
        hide_gpus,
        release,
        seed_everything,
        visible_gpus,
    )

_LAZY = {
    "TrainingDiverged": "results",
    "TrainResult": "results",
    "class_weights": "fit",
    "make_dataset": "fit",
    "make_loss": "fit",
    "predict": "fit",
    "train": "fit",
    "OBJECTIVES": "metrics",
    "compute_metrics": "metrics",
    "objective_value": "metrics",
    "block_starts": "model",
    "build_model": "model",
    "check_weights": "model",
    "keras_cache_dir": "model",
    "set_trainable": "model",
    "unfreeze_index": "model",
    "weights_mode": "model",
    "configure": "runtime",
    "release": "runtime",
    "seed_everything": "runtime",
    "visible_gpus": "runtime",
    "hide_gpus": "runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
    "hide_gpus",
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
    "visible_gpus",
    "weights_mode",
]
