"""Classification metrics (scikit-learn) from true labels and predicted probabilities; no TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

OBJECTIVES = ("accuracy", "balanced_accuracy", "macro_f1")


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.

    ``y_true`` holds integer labels (N,), ``probs`` class probabilities (N, C). Every value is
    a plain Python number or list, so the result can go straight to JSON.
    """
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    y_pred = np.asarray(probs).argmax(axis=-1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(_balanced_accuracy(y_true, y_pred, balanced_accuracy_score)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "n": int(y_true.size),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, fn: Any) -> float:
    # scikit-learn warns (and ignores the class) when a class is absent from y_true; the
    # mean recall over the classes present is what it returns, which is what we want.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(y_true, y_pred))


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    """The value of ``objective`` (one of :data:`OBJECTIVES`) in a :func:`compute_metrics` result."""
    if objective not in OBJECTIVES:
        from blood_automl.errors import ConfigError

        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return float(metrics[objective])
