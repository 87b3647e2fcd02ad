"""The objective: one Optuna trial = suggest a config, train it, report every epoch, store what it did."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from blood_automl.analysis.figures import confusion_matrix_png, curves_png
from blood_automl.data import PreparedData
from blood_automl.search.faults import STOPPED_PREFIX, EnvironmentStop, classify
from blood_automl.spaces import Space, TrialConfig, suggest
from blood_automl.studies.artifacts import upload_png
from blood_automl.studies.dashboard_notes import write_note
from blood_automl.studies.records import FAIL_REASON_ATTR as FAIL_REASON
from blood_automl.studies.records import INTERRUPTED_ATTR as INTERRUPTED
from blood_automl.studies.records import STOP_AFTER_ATTR as STOP_AFTER
from blood_automl.studies.records import WARNINGS_ATTR as WARNINGS
from blood_automl.studies.records import TrialRecord


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a trial was running."""


@dataclass
class SearchContext:
    """What every trial of one search shares."""

    space: Space
    data: PreparedData
    weights: str
    objective: str = "accuracy"
    seed: int = 0
    patience: int | None = 3
    artifact_store: Any | None = None
    # Why there is no artifact store (its folder cannot be made): trials then warn.
    artifact_error: str | None = None
    on_epoch: Callable[[optuna.Trial, TrialConfig, int, float], None] | None = None


def trial_seed(base_seed: int, number: int) -> int:
    """The seed of trial ``number``: distinct per trial, reproducible from the study's seed."""
    return (base_seed * 1_000_003 + number) % (2**31 - 1)


def config_note(config: TrialConfig, trial_number: int, params: Mapping[str, Any]) -> str:
    """The trial's note for the dashboard: its searched parameters, then the whole configuration.

    The first table uses the names of the dashboard's parameter list (the space's names);
    the second is what the trainer was given, fixed and derived values included.
    """
    searched = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
    whole = "\n".join(f"| {k} | {v} |" for k, v in config.to_dict().items())
    return (
        f"### Trial {trial_number}: {config.backbone}\n\n"
        f"**Searched parameters**\n\n| parameter | value |\n|---|---|\n{searched}\n\n"
        f"**Configuration given to the trainer** (fixed and derived values too)\n\n"
        f"| setting | value |\n|---|---|\n{whole}\n"
    )


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line[:300]


def start_trial(trial: optuna.Trial, ctx: SearchContext) -> tuple[TrialConfig, int]:
    """Suggest the trial's config (with the study's sampler) and record it on the trial."""
    config = suggest(trial, ctx.space)
    seed = trial_seed(ctx.seed, trial.number)
    record = TrialRecord(backbone=config.backbone, config=config.to_dict(), seed=seed)
    _store(trial, record.started_attrs())
    _save_note(trial, config)
    return config, seed


def train_trial(trial: optuna.Trial, config: TrialConfig, seed: int, ctx: SearchContext) -> float:
    """Train ``config``, report every epoch to the trial's pruner, record what happened.

    A failure of the configuration is recorded on the trial (``fail_reason``;
    ``interrupted`` for SIGINT or SIGTERM) and re-raised; a pruned trial raises
    :class:`optuna.TrialPruned`. An environment error (disk, store, weights, data; see
    :func:`~blood_automl.search.faults.classify`) is re-raised unrecorded, for the caller
    to stop the search. Figures that cannot be written leave a warning on the trial,
    which keeps its value.
    """
    from blood_automl import trainer  # TensorFlow: only where a trial actually trains

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if ctx.on_epoch is not None:
            ctx.on_epoch(trial, config, step, value)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {step} with {ctx.objective} {value:.4f}")

    d = ctx.data
    try:
        result = trainer.train(
            config,
            d.x_train,
            d.y_train,
            d.class_names,
            x_val=d.x_val,
            y_val=d.y_val,
            weights=ctx.weights,
            objective=ctx.objective,
            report=report,
            seed=seed,
            patience=ctx.patience,
            every_epoch=ctx.space.schema < 2,  # how studies of space schema 1 were pruned
        )
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt as exc:
        mark_interrupted(trial)
        raise Interrupted() from exc
    except Exception as exc:
        if classify(exc) == "trial":
            trial.set_user_attr(FAIL_REASON, one_line(exc))
        raise
    finally:
        trainer.release()
    if result.best_value is None or result.val_metrics is None:
        raise RuntimeError("the trial trained no epoch with validation data")
    metrics = result.val_metrics
    record = TrialRecord(
        val_metrics={
            k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "per_class")
        },
        history=result.history,
        epochs=(result.head_epochs, result.finetune_epochs),
        best_step=result.best_step,
        unfreeze_from=result.unfreeze_from,
        train_seconds=round(result.seconds, 1),
    )
    _store(trial, record.trained_attrs())
    _save_figures(ctx, trial, config, result.history, metrics)
    return float(result.best_value)


def _save_figures(
    ctx: SearchContext,
    trial: optuna.Trial,
    config: TrialConfig,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> None:
    """Upload the trial's figures; a failure becomes a warning, and the trial keeps its value.

    When the disk failed (a full or read-only disk, not a plotting error) the trial is
    also marked :data:`STOP_AFTER`: the search stops once it is recorded COMPLETE.
    """
    problem, disk = ctx.artifact_error, ctx.artifact_error is not None
    if problem is None:
        try:
            _upload_figures(ctx, trial, config, history, metrics)
        except Exception as exc:
            problem, disk = one_line(exc), classify(exc) == "environment"
    if problem is not None:
        trial.set_user_attr(WARNINGS, [f"figures not written: {problem}"])
        if disk:
            trial.set_user_attr(STOP_AFTER, f"its figures could not be written ({problem})")


def stop_trial(trial: optuna.Trial, reason: str) -> EnvironmentStop:
    """Mark ``trial`` stopped by an environment error (not counted) and return the stop to raise.

    The marks are best effort: when the store itself failed they cannot be written, and
    the trial is left as the store has it.
    """
    with contextlib.suppress(Exception):
        trial.set_user_attr(INTERRUPTED, STOPPED_PREFIX + reason)
        trial.set_user_attr(FAIL_REASON, reason)
    return EnvironmentStop(reason, trial.number)


def environment_guard(
    objective: Callable[[optuna.Trial], float],
) -> Callable[[optuna.Trial], float]:
    """``objective``, with environment errors turned into :class:`EnvironmentStop`."""

    def guarded(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except Exception as exc:
            if classify(exc) == "environment":
                raise stop_trial(trial, one_line(exc)) from exc
            raise

    return guarded


def mark_interrupted(trial: optuna.Trial) -> None:
    """Record that SIGINT or SIGTERM stopped the trial (it then does not count)."""
    trial.set_user_attr(INTERRUPTED, "stopped by the user (SIGINT or SIGTERM)")
    trial.set_user_attr(FAIL_REASON, "interrupted")


def make_objective(ctx: SearchContext) -> Callable[[optuna.Trial], float]:
    """The Optuna objective of a search, training in this process."""

    def objective(trial: optuna.Trial) -> float:
        config, seed = start_trial(trial, ctx)
        return train_trial(trial, config, seed, ctx)

    return environment_guard(objective)


def _store(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _save_note(trial: optuna.Trial, config: TrialConfig) -> None:
    write_note(trial, config_note(config, trial.number, trial.params))


def _upload_figures(
    ctx: SearchContext,
    trial: optuna.Trial,
    config: TrialConfig,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
) -> None:
    if ctx.artifact_store is None:
        return
    title = f"trial {trial.number}: {config.backbone}"
    with tempfile.TemporaryDirectory() as tmp:
        files = [
            confusion_matrix_png(
                metrics["confusion_matrix"],
                ctx.data.class_names,
                Path(tmp) / f"trial-{trial.number}-confusion-matrix.png",
                f"{title} (validation)",
            ),
            curves_png(history, Path(tmp) / f"trial-{trial.number}-curves.png", title),
        ]
        for path in files:
            upload_png(ctx.artifact_store, path, trial)
