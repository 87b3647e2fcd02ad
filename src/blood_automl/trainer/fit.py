"""Two-phase training of one TrialConfig: tf.data pipeline, head phase, fine-tune phase, per-epoch reports."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.plan import epoch_plan
from blood_automl.trainer import phases as ph
from blood_automl.trainer.augment import AugmentParams, make_augmenter
from blood_automl.trainer.metrics import compute_metrics, objective_value
from blood_automl.trainer.model import build_model, set_trainable, unfreeze_index, weights_mode
from blood_automl.trainer.results import TrainingDiverged, TrainResult
from blood_automl.trainer.runtime import configure, seed_everything

__all__ = [
    "ReportFn",
    "TrainResult",
    "TrainingDiverged",
    "backbone_schedule",
    "class_weights",
    "make_dataset",
    "make_loss",
    "make_optimizer",
    "mean_log_loss",
    "predict",
    "train",
]

# report(step, value): step is the epoch's pruner step (see spaces.plan.EpochPlan: the epochs
# of the trial's last phase, counted from 1); it may raise (optuna.TrialPruned, for example)
# to stop the trial.
ReportFn = Callable[[int, float], None]


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: ``none`` (ones), ``balanced`` (n / (C * count)), ``sqrt`` of balanced.

    Weights are normalised to mean 1 over the samples, so the loss scale (and with it the
    learning rate that suits it) does not change with the mode.
    """
    counts = np.bincount(np.asarray(labels).astype(np.int64), minlength=num_classes).astype(float)
    if mode == "none":
        return np.ones(num_classes, dtype="float32")
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    if mode == "sqrt":
        w = np.sqrt(w)
    w = w / max((w * counts).sum() / counts.sum(), 1e-12)
    return w.astype("float32")


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    batch_size: int,
    training: bool,
    augment: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None,
    weights: np.ndarray | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """uint8 images + integer labels -> batches of (float32 images 0-255, one-hot[, sample weight]).

    Training data is shuffled (seeded, reshuffled each pass), repeated without end (fit it
    with ``steps_per_epoch``: one iterator then serves every epoch of a ``fit``, with no
    start-up cost per epoch) and augmented on whole batches in parallel with the model step;
    nothing else is. Each batch goes through one ``map``.
    """
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(images), np.asarray(labels, np.int64)))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        ds = ds.repeat()  # after batch: every pass is one epoch, partial last batch included
    class_w = None if weights is None else tf.constant(weights, tf.float32)

    def prepare(x: tf.Tensor, y: tf.Tensor) -> Any:
        y = tf.one_hot(y, num_classes, dtype=tf.float32)
        if augment is not None:
            x, y = augment(x, y)
        x = tf.cast(x, tf.float32)
        if class_w is None:
            return x, y
        return x, y, tf.reduce_sum(y * class_w, axis=-1)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_loss(config: TrialConfig) -> keras.losses.Loss:
    """Cross-entropy with label smoothing, or focal loss (alpha 1, so class weighting stays separate)."""
    if config.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=config.focal_gamma)
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)


def make_optimizer(config: TrialConfig, learning_rate: Any) -> keras.optimizers.Optimizer:
    """Adam, AdamW or Lion; weight decay applies to the latter two."""
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "lion":
        return keras.optimizers.Lion(learning_rate, weight_decay=config.weight_decay or None)
    return keras.optimizers.Adam(learning_rate)


class _NanGuard(keras.callbacks.Callback):
    """Ends the training with :class:`TrainingDiverged` at the first batch whose loss is not finite."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise TrainingDiverged(
                f"loss became {float(loss)} in the {self.phase} phase at batch {batch}"
            )


def mean_log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Cross-entropy of predicted probabilities against integer labels (clipped at ``eps``)."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, eps, 1.0))))


@dataclass
class _Validation:
    """The validation data of a training and how one epoch's model is scored on it."""

    data: tf.data.Dataset
    labels: np.ndarray
    class_names: Sequence[str]
    objective: str

    def score(self, model: keras.Model) -> tuple[dict[str, Any], float, float]:
        """The model's metrics, objective value and validation loss."""
        probs = model.predict(self.data, verbose=0)
        metrics = compute_metrics(self.labels, probs, self.class_names)
        value = objective_value(metrics, self.objective)
        return metrics, value, mean_log_loss(probs, self.labels)


class _EpochMonitor(keras.callbacks.Callback):
    """Per epoch: the history row; with validation data also the score, best weights, report, patience."""

    def __init__(
        self,
        *,
        log: ph.PhaseLog,
        phase: str,
        validation: _Validation | None,
        report: ReportFn | None,
        patience: ph.Patience,
    ) -> None:
        super().__init__()
        self.log, self.phase, self.validation = log, phase, validation
        self.report, self.patience = report, patience

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = ph.history_row(self.log.next_step, self.phase, time.monotonic(), dict(logs or {}))
        if self.validation is None:
            self.log.record(row)
            return
        metrics, value = self._validate(self.validation, row)
        step = self.log.record(row)
        improved = self._keep_if_best(step, value, metrics)
        self._report(step, value)
        if self.patience.update(improved):
            self.model.stop_training = True

    def _validate(
        self, validation: _Validation, row: dict[str, Any]
    ) -> tuple[dict[str, Any], float]:
        """Score the model; its validation loss and metrics go into ``row``."""
        metrics, value, loss = validation.score(self.model)
        row["val_loss"] = loss
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            row[f"val_{key}"] = metrics[key]
        return metrics, value

    def _keep_if_best(self, step: int, value: float, metrics: dict[str, Any]) -> bool:
        """Snapshot the weights of a new best epoch; whether this one is."""
        best = self.log.best
        if not best.improves(value):
            return False
        best.take(value, step, self.phase, metrics)
        best.keep(self.model.get_weights())
        return True

    def _report(self, step: int, value: float) -> None:
        """Hand the value to ``report`` at the pruner's step, if the pruner sees this epoch."""
        pruner_step = self.log.pruner_step(step)
        if self.report is not None and pruner_step is not None:
            self.report(pruner_step, value)


def backbone_schedule(
    learning_rate: float, steps: int, planned_epochs: int, warmup_epochs: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to ``learning_rate`` over ``warmup_epochs``, then cosine decay to 1%.

    The decay spans the configuration's planned epochs (its most), so a trial stopped early
    and its refit, which trains only the epochs that led to the best score, follow the same
    learning rates epoch by epoch.
    """
    warm = max(0, min(warmup_epochs, planned_epochs - 1)) * steps
    decay = max(1, planned_epochs * steps - warm)
    if warm == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        learning_rate * 0.01, decay, alpha=0.01, warmup_target=learning_rate, warmup_steps=warm
    )


def train(
    config: TrialConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    class_names: Sequence[str],
    *,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    weights: str | None = "imagenet",
    objective: str = "accuracy",
    report: ReportFn | None = None,
    seed: int = 0,
    patience: int | None = 3,
    epochs: tuple[int, int] | None = None,
    every_epoch: bool = False,
    xla: bool = False,
    verbose: int = 0,
) -> TrainResult:
    """Build and fit ``config`` and return the model at its best validation epoch.

    ``two_phase``: the head trains on a frozen backbone at ``head_lr``, then the top
    ``unfreeze_fraction`` of the backbone (whole blocks) trains with it. ``single_phase``:
    head and unfrozen blocks train together from the first epoch. The phase that trains
    the backbone warms its learning rate up over ``warmup_epochs`` to ``finetune_lr``, then
    decays it (cosine) over ``finetune_epochs``, and ends early on a plateau of
    ``patience`` epochs. Batch norm of the unfrozen blocks stays frozen
    (``batch_norm="frozen"``: ``trainable=False``, inference mode) or adapts to the data
    (``"adapt"``: it trains, its moving statistics at momentum 0.9). From scratch
    (``weights="none"``) the whole network, batch norm included, trains in both phases.
    Epochs of the last phase are reported to ``report`` (see :class:`EpochPlan`;
    ``every_epoch`` reports all). With ``epochs=(head, finetune)`` and no validation data
    (a refit), exactly those epochs run and the final weights are kept.
    """
    configure()
    seed_everything(seed)
    started = time.monotonic()
    mode = weights_mode(weights)
    model, backbone = build_model(
        config, len(class_names), image_size=int(x_train.shape[1]), weights=mode
    )
    start = 1 if mode == "none" else unfreeze_index(backbone, config.unfreeze_fraction)
    plan = epoch_plan(
        config,
        trains_backbone=start < len(backbone.layers),
        epochs=epochs,
        every_epoch=every_epoch,
    )
    data = _training_data(config, x_train, y_train, len(class_names), seed)
    validation = _validation(x_val, y_val, class_names, objective)
    runner = _PhaseRunner(
        model=model,
        config=config,
        data=data,
        loss=make_loss(config),
        steps=max(1, math.ceil(len(x_train) / config.batch_size)),
        log=ph.PhaseLog(plan, validated=validation is not None),
        validation=validation,
        report=report,
        patience=patience,
        xla=xla,
        verbose=verbose,
    )
    trainable_layers = _fit_phases(runner, backbone, start, scratch=mode == "none")
    log = runner.log
    if log.restores_best():
        model.set_weights(log.best.weights)
    ph.relative_seconds(log.history, started)
    used = log.used()
    return TrainResult(
        model=model,
        history=log.history,
        best_step=used.best_step,
        best_value=log.best.value,
        val_metrics=log.best.metrics,
        head_epochs=used.head_epochs,
        finetune_epochs=used.finetune_epochs,
        unfreeze_from=backbone.layers[start].name if start < len(backbone.layers) else None,
        trainable_layers=trainable_layers,
        seconds=time.monotonic() - started,
    )


def _training_data(
    config: TrialConfig, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int
) -> tf.data.Dataset:
    """The endless, shuffled, augmented and (by ``class_weight``) weighted training batches."""
    augment = make_augmenter(AugmentParams.from_config(config), num_classes, seed=seed)
    weighted = config.class_weight != "none"
    return make_dataset(
        x,
        y,
        num_classes,
        batch_size=config.batch_size,
        training=True,
        augment=augment,
        weights=class_weights(y, num_classes, config.class_weight) if weighted else None,
        seed=seed,
    )


def _validation(
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    class_names: Sequence[str],
    objective: str,
) -> _Validation | None:
    """The validation data in batches, or None without validation images."""
    if x_val is None or y_val is None or len(x_val) == 0:
        return None
    data = make_dataset(x_val, y_val, len(class_names), batch_size=256, training=False)
    return _Validation(data, np.asarray(y_val, np.int64), class_names, objective)


@dataclass
class _PhaseRunner:
    """What every phase of one training shares, and how a phase is compiled and fitted."""

    model: keras.Model
    config: TrialConfig
    data: tf.data.Dataset
    loss: keras.losses.Loss
    steps: int
    log: ph.PhaseLog
    validation: _Validation | None
    report: ReportFn | None
    patience: int | None
    xla: bool
    verbose: int

    def run(self, phase: ph.Phase, learning_rate: Any) -> None:
        """Train ``phase`` (if it has epochs) at ``learning_rate``, epochs numbered on from the last."""
        if not phase.runs:
            return
        self.model.compile(
            optimizer=make_optimizer(self.config, learning_rate),
            loss=self.loss,
            metrics=["accuracy"],
            jit_compile=self.xla,
        )
        first = len(self.log.history)
        self.model.fit(
            self.data,
            epochs=first + phase.epochs,
            initial_epoch=first,
            steps_per_epoch=self.steps,  # the training dataset repeats without end
            callbacks=self._callbacks(phase.name),
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=self.verbose,
        )

    def _callbacks(self, phase: str) -> list[keras.callbacks.Callback]:
        """The NaN guard and the epoch monitor of one phase (its own patience count)."""
        limit = self.patience if self.validation is not None else None
        monitor = _EpochMonitor(
            log=self.log,
            phase=phase,
            validation=self.validation,
            report=self.report,
            patience=ph.Patience(limit),
        )
        return [_NanGuard(phase), monitor]


def _fit_phases(runner: _PhaseRunner, backbone: keras.Model, start: int, *, scratch: bool) -> int:
    """Train the head phase, then the backbone phase from the best head; the trainable layers.

    Phase 1 (``two_phase``) trains the head only (from scratch: everything); phase 2 trains
    the unfrozen blocks with the head, warm-up then cosine decay.
    """
    config, plan = runner.config, runner.log.plan
    head, finetune = ph.phases(plan)
    if scratch:
        set_trainable(backbone, 1, scratch=True)
    else:
        backbone.trainable = False
    runner.run(head, config.head_lr)
    if runner.log.end_head():
        runner.model.set_weights(runner.log.best.weights)  # phase 2 starts from the best head
    adapt_bn = config.batch_norm == "adapt"
    trainable = (
        set_trainable(backbone, start, scratch=scratch, adapt_bn=adapt_bn) if finetune.runs else 0
    )
    # The configuration's most epochs, or more when a refit is given more.
    planned = max(finetune.epochs, config.finetune_epochs)
    schedule = backbone_schedule(config.finetune_lr, runner.steps, planned, plan.warmup_epochs)
    runner.run(finetune, schedule)
    return trainable


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for uint8 images (N, H, W, 3)."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(images)).batch(batch_size)
    ds = ds.map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)
    return np.asarray(model.predict(ds, verbose=0))
