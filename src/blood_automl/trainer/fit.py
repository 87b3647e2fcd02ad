"""Two-phase training of one TrialConfig: tf.data pipeline, head phase, fine-tune phase, per-epoch reports."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.plan import EpochPlan, epoch_plan
from blood_automl.trainer.augment import AugmentParams, make_augmenter
from blood_automl.trainer.metrics import compute_metrics, objective_value
from blood_automl.trainer.model import build_model, set_trainable, unfreeze_index, weights_mode
from blood_automl.trainer.runtime import configure, seed_everything

# report(step, value): step is the epoch's pruner step (see spaces.plan.EpochPlan: the epochs
# of the trial's last phase, counted from 1); it may raise (optuna.TrialPruned, for example)
# to stop the trial.
ReportFn = Callable[[int, float], None]


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


class _EpochMonitor(keras.callbacks.Callback):
    """Per epoch: validation metrics, the objective to ``report``, best weights, early stopping."""

    def __init__(
        self,
        *,
        val: tf.data.Dataset | None,
        y_val: np.ndarray | None,
        class_names: Sequence[str],
        objective: str,
        report: ReportFn | None,
        patience: int | None,
        history: list[dict[str, Any]],
        phase: str,
        best: dict[str, Any],
        plan: EpochPlan,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.val, self.y_val, self.class_names = val, y_val, class_names
        self.objective, self.report, self.patience = objective, report, patience
        self.history, self.phase, self.best = history, phase, best
        self.wait = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise TrainingDiverged(
                f"loss became {float(loss)} in the {self.phase} phase at batch {batch}"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        step = len(self.history) + 1
        row: dict[str, Any] = {"step": step, "phase": self.phase, "seconds": time.monotonic()}
        row.update({k: float(v) for k, v in logs.items() if k in ("loss", "accuracy")})
        if self.val is not None and self.y_val is not None:
            probs = self.model.predict(self.val, verbose=0)
            metrics = compute_metrics(self.y_val, probs, self.class_names)
            value = objective_value(metrics, self.objective)
            eps = 1e-7
            row["val_loss"] = float(
                -np.mean(np.log(np.clip(probs[np.arange(len(self.y_val)), self.y_val], eps, 1.0)))
            )
            for key in ("accuracy", "balanced_accuracy", "macro_f1"):
                row[f"val_{key}"] = metrics[key]
            self.history.append(row)
            if self.best.get("value") is None or value > self.best["value"]:
                self.best.update(value=value, step=step, metrics=metrics, phase=self.phase)
                self.best["weights"] = self.model.get_weights()
                self.wait = 0
            else:
                self.wait += 1
            pruner_step = self.plan.pruner_step(step)
            if self.report is not None and pruner_step is not None:
                self.report(pruner_step, value)
            if self.patience is not None and self.wait >= self.patience:
                self.model.stop_training = True
        else:
            self.history.append(row)


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
    num_classes = len(class_names)
    mode = weights_mode(weights)
    scratch = mode == "none"
    model, backbone = build_model(
        config, num_classes, image_size=int(x_train.shape[1]), weights=mode
    )
    start = 1 if scratch else unfreeze_index(backbone, config.unfreeze_fraction)
    plan = epoch_plan(
        config,
        trains_backbone=start < len(backbone.layers),
        epochs=epochs,
        every_epoch=every_epoch,
    )
    head_epochs, finetune_epochs = plan.head_epochs, plan.backbone_epochs

    sample_w = class_weights(y_train, num_classes, config.class_weight)
    augment = make_augmenter(AugmentParams.from_config(config), num_classes, seed=seed)
    train_ds = make_dataset(
        x_train,
        y_train,
        num_classes,
        batch_size=config.batch_size,
        training=True,
        augment=augment,
        weights=None if config.class_weight == "none" else sample_w,
        seed=seed,
    )
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    val_ds = (
        make_dataset(x_val, y_val, num_classes, batch_size=256, training=False)  # type: ignore[arg-type]
        if has_val
        else None
    )
    steps = max(1, math.ceil(len(x_train) / config.batch_size))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"value": None, "step": 0, "metrics": None}
    loss = make_loss(config)

    def run_phase(phase: str, n_epochs: int, lr: Any) -> None:
        if n_epochs <= 0:
            return
        model.compile(
            optimizer=make_optimizer(config, lr),
            loss=loss,
            metrics=["accuracy"],
            jit_compile=xla,
        )
        monitor = _EpochMonitor(
            val=val_ds,
            y_val=None if y_val is None else np.asarray(y_val, np.int64),
            class_names=class_names,
            objective=objective,
            report=report,
            patience=patience if has_val else None,
            history=history,
            phase=phase,
            best=best,
            plan=plan,
        )
        first = len(history)
        model.fit(
            train_ds,
            epochs=first + n_epochs,
            initial_epoch=first,
            steps_per_epoch=steps,  # the training dataset repeats without end
            callbacks=[monitor],
            shuffle=False,  # the dataset shuffles itself, seeded
            verbose=verbose,
        )

    # Phase 1 (two_phase): the head only (from scratch: everything).
    if scratch:
        set_trainable(backbone, 1, scratch=True)
    else:
        backbone.trainable = False
    run_phase("head", head_epochs, config.head_lr)
    head_done = len(history)
    head_used = head_done
    if has_val and best.get("weights") is not None:
        model.set_weights(best["weights"])  # phase 2 starts from the best head
        head_used = int(best["step"])

    # Phase 2: the unfrozen blocks train with the head; warm-up, then cosine decay.
    trainable_layers = (
        set_trainable(backbone, start, scratch=scratch, adapt_bn=config.batch_norm == "adapt")
        if finetune_epochs
        else 0
    )
    # The configuration's most epochs, or more when a refit is given more.
    planned = max(finetune_epochs, config.finetune_epochs)
    schedule = backbone_schedule(config.finetune_lr, steps, planned, plan.warmup_epochs)
    run_phase("finetune", finetune_epochs, schedule)
    finetune_done = len(history) - head_done

    if has_val and best.get("weights") is not None:
        model.set_weights(best["weights"])
        best_step = int(best["step"])
        used_head = head_used
        used_finetune = max(0, best_step - head_done)
    else:
        best_step, used_head, used_finetune = len(history), head_done, finetune_done
    for row in history:
        row["seconds"] = round(row["seconds"] - started, 3)
    return TrainResult(
        model=model,
        history=history,
        best_step=best_step,
        best_value=best.get("value"),
        val_metrics=best.get("metrics"),
        head_epochs=used_head,
        finetune_epochs=used_finetune,
        unfreeze_from=backbone.layers[start].name if start < len(backbone.layers) else None,
        trainable_layers=trainable_layers,
        seconds=time.monotonic() - started,
    )


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for uint8 images (N, H, W, 3)."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(images)).batch(batch_size)
    ds = ds.map(lambda x: tf.cast(x, tf.float32)).prefetch(tf.data.AUTOTUNE)
    return np.asarray(model.predict(ds, verbose=0))
