"""Temperature calibration of an export: the fit (numpy), reliability bins, the fold into Keras.

The temperature ``T`` is fitted on validation logits of a model that never saw the
validation split (the "calibration twin", trained on the train split alone with the refit's
configuration, epochs and seed), by minimising the validation negative log-likelihood of
``softmax(z / T)`` over its logits ``z`` (logits, not probabilities: a float32 softmax
rounds the small probabilities of an over-confident model to 0, which would bias ``T``).
It is then folded into the exported model, which was trained on train + validation, as a
division of its logits by ``T`` (built-in Keras layers only, so the model keeps loading in
Keras safe mode with no code of this package). A positive ``T`` does not change which
class is largest, so accuracy stays the same. The test split is only ever measured, never
fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blood_automl.data import PreparedData
from blood_automl.errors import DataError
from blood_automl.spaces import TrialConfig

N_BINS = 15
"""Equal-width confidence bins of the expected calibration error and the reliability diagram."""

LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
"""The search interval of ``log T``."""

_TINY = 1e-12  # probabilities are clipped here before the log (float32 softmax can give 0)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """``log(p)`` clipped at ``1e-12``: logits of ``probs`` when the real logits are not at hand."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(z / T)`` row by row, in float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, not {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: the same as dividing the logits by ``T``."""
    return softmax(log_probabilities(probs), temperature)


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean ``-log softmax(z / T)[label]`` over the rows of ``logits``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    picked = z[np.arange(z.shape[0]), np.asarray(labels, dtype=np.int64)]
    return float(np.mean(log_norm - picked))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, tol: float = 1e-5) -> float:
    """The ``T > 0`` that minimises :func:`negative_log_likelihood` on ``(logits, labels)``.

    A golden-section search on ``log T`` over :data:`LOG_T_BOUNDS`: the NLL is convex in
    ``1 / T``, so it has one minimum along ``log T`` and the search finds it.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or z.shape[0] == 0 or labels.shape != (z.shape[0],):
        raise ValueError(f"need (N, C) logits and N labels, got {z.shape}, {labels.shape}")
    return minimise_temperature(lambda t: negative_log_likelihood(z, labels, t), tol=tol)


def minimise_temperature(nll: Callable[[float], float], *, tol: float = 1e-5) -> float:
    """The ``T`` in :data:`LOG_T_BOUNDS` that minimises ``nll(T)``, by golden section on ``log T``.

    ``nll`` must have one minimum along ``log T`` (true of the NLL of ``softmax(z / T)``, and
    of a mean of such softmaxes in practice). Returns 1 when no ``T`` does better than 1.
    """

    def loss(log_t: float) -> float:
        return nll(math.exp(log_t))

    lo, hi = LOG_T_BOUNDS
    a, b = lo + (1 - _GOLDEN) * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - _GOLDEN) * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = loss(b)
    best = (lo + hi) / 2
    # Never worse than no calibration (a flat NLL, e.g. every prediction right and sure).
    return math.exp(best) if loss(best) <= loss(0.0) else 1.0


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> list[dict[str, float | int]]:
    """Per equal-width confidence bin ``(lo, hi]``: image count, mean confidence, accuracy.

    The confidence of an image is its largest probability; empty bins have confidence and
    accuracy 0 and count 0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels, dtype=np.int64)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    rows: list[dict[str, float | int]] = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else 0.0,
                "accuracy": float(correct[inside].mean()) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over equal-width confidence bins."""
    return ece_of_bins(reliability_bins(probs, labels, n_bins))


def ece_of_bins(bins: Sequence[dict[str, Any]]) -> float:
    """The expected calibration error of :func:`reliability_bins`' rows."""
    total = sum(int(b["count"]) for b in bins)
    if total == 0:
        return 0.0
    return float(
        sum(int(b["count"]) * abs(float(b["accuracy"]) - float(b["confidence"])) for b in bins)
        / total
    )


def at_bound(temperature: float) -> bool:
    """Whether ``T`` is at an end of :data:`LOG_T_BOUNDS` (predictions near chance, or all sure)."""
    log_t = math.log(temperature)
    return min(abs(log_t - LOG_T_BOUNDS[0]), abs(log_t - LOG_T_BOUNDS[1])) < 1e-3


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the validation split (where it was fitted)."""

    temperature: float
    n_validation: int
    validation_nll_before: float
    validation_nll_after: float
    validation_ece_before: float
    validation_ece_after: float


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> Calibration:
    """Fit the temperature on validation logits and measure it there."""
    t = fit_temperature(val_logits, val_labels)
    return Calibration(
        temperature=t,
        n_validation=int(np.asarray(val_labels).shape[0]),
        validation_nll_before=negative_log_likelihood(val_logits, val_labels),
        validation_nll_after=negative_log_likelihood(val_logits, val_labels, t),
        validation_ece_before=expected_calibration_error(softmax(val_logits), val_labels),
        validation_ece_after=expected_calibration_error(softmax(val_logits, t), val_labels),
    )


def calibration_metrics(
    calibration: Calibration | None,
    test_before: np.ndarray,
    test_after: np.ndarray | None,
    test_labels: np.ndarray,
) -> dict[str, Any]:
    """metrics.json's ``calibration`` entry: the temperature, validation NLL, test ECE and bins.

    Without a calibration (``--no-calibration``) it holds the test ECE of the model as it is.
    """
    before = reliability_bins(test_before, test_labels)
    entry: dict[str, Any] = {
        "method": "temperature" if calibration is not None else "none",
        "bins": N_BINS,
        "test_ece_before": ece_of_bins(before),
        "test_reliability_before": before,
    }
    if calibration is None or test_after is None:
        return entry
    after = reliability_bins(test_after, test_labels)
    entry.update(
        {
            "temperature": calibration.temperature,
            "temperature_at_bound": at_bound(calibration.temperature),
            "fitted_on": "validation split, predicted by the same configuration trained on "
            "the train split only (same epochs and seed)",
            "n_validation": calibration.n_validation,
            "validation_nll_before": calibration.validation_nll_before,
            "validation_nll_after": calibration.validation_nll_after,
            "validation_ece_before": calibration.validation_ece_before,
            "validation_ece_after": calibration.validation_ece_after,
            "test_ece_after": ece_of_bins(after),
            "test_reliability_after": after,
        }
    )
    return entry


# -- Keras (imported inside the functions) ---------------------------------------------------

LOGITS_LAYER = "logits"
PROBABILITIES_LAYER = "probabilities"
TEMPERATURE_LAYER = "temperature"


def twin_calibration(
    config: TrialConfig,
    data: PreparedData,
    *,
    weights: str | None,
    seed: int,
    epochs: tuple[int, int],
) -> Calibration:
    """Train the calibration twin on the train split, take its validation logits, fit ``T``.

    The twin is trained exactly as the refit is (same configuration, epochs and seed), on
    the train split alone, so its validation predictions are honest; it is freed after.
    """
    val_logits = twin_validation_logits(config, data, weights=weights, seed=seed, epochs=epochs)
    return calibrate(val_logits, np.asarray(data.y_val))


def twin_validation_logits(
    config: TrialConfig,
    data: PreparedData,
    *,
    weights: str | None,
    seed: int,
    epochs: tuple[int, int],
    also: Callable[[Any], None] | None = None,
) -> np.ndarray:
    """The validation logits of the calibration twin (``config`` trained on the train split).

    ``also`` is called with the twin model before it is freed (to take more predictions).
    """
    from blood_automl import trainer

    if len(data.y_val) == 0:
        raise DataError(
            "the study's prepared data has an empty validation split, so no temperature can "
            "be fitted; refit with --no-calibration"
        )
    twin = trainer.train(
        config,
        np.asarray(data.x_train),
        np.asarray(data.y_train),
        data.class_names,
        weights=weights,
        seed=seed,
        epochs=epochs,
    )
    val_logits = trainer.predict(logits_model(twin.model), data.x_val)
    if also is not None:
        also(twin.model)
    del twin
    trainer.release()
    return np.asarray(val_logits)


def _check_head(model: Any) -> None:
    names = [layer.name for layer in model.layers]
    if LOGITS_LAYER not in names or names[-1] != PROBABILITIES_LAYER:
        raise ValueError(
            f"model {model.name!r} does not end with layers {LOGITS_LAYER!r} -> "
            f"{PROBABILITIES_LAYER!r}; it was not built by blood_automl.trainer"
        )


def logits_model(model: Any) -> Any:
    """The part of ``model`` up to its ``logits`` layer (shares its layers and weights)."""
    import keras

    _check_head(model)
    return keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).output, name="logits_of_model")


def with_temperature(model: Any, temperature: float) -> Any:
    """``model`` with its logits divided by ``temperature`` before the softmax.

    The model must end as :func:`blood_automl.trainer.build_model` builds it: a ``logits``
    Dense layer, then the softmax layer ``probabilities``. The new model shares every
    layer (and weight) of ``model`` up to the logits; the division is a built-in
    ``Rescaling`` layer, so it saves and loads in Keras safe mode like the rest.
    """
    import keras

    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, not {temperature!r}")
    _check_head(model)
    logits = model.get_layer(LOGITS_LAYER).output
    scaled = keras.layers.Rescaling(
        1.0 / float(temperature), name=TEMPERATURE_LAYER, dtype="float32"
    )(logits)
    probs = keras.layers.Activation("softmax", name=PROBABILITIES_LAYER, dtype="float32")(scaled)
    return keras.Model(model.inputs, probs, name=model.name)
