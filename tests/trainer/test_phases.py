"""The phase bookkeeping of a training, driven epoch by epoch without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.plan import EpochPlan, epoch_plan
from blood_automl.trainer.phases import (
    BestEpoch,
    EpochsUsed,
    Patience,
    Phase,
    PhaseLog,
    history_row,
    phases,
    relative_seconds,
)

TWO = TrialConfig(schedule="two_phase", head_epochs=3, finetune_epochs=5, unfreeze_fraction=0.5)
ONE = TrialConfig(schedule="single_phase", head_epochs=3, finetune_epochs=5, unfreeze_fraction=1.0)


def run(
    plan: EpochPlan, values: Sequence[float] | None, patience: int | None = None
) -> tuple[PhaseLog, list[tuple[int, float]]]:
    """Drive a PhaseLog as the trainer's callbacks do: per phase, per epoch, ``values`` in turn.

    ``values=None``: no validation (a refit). Returns the log and the (pruner step, value)
    pairs reported.
    """
    log = PhaseLog(plan, validated=values is not None)
    reported: list[tuple[int, float]] = []
    scores = iter(values or [])
    head, finetune = phases(plan)
    for phase in (head, finetune):
        stop = Patience(patience)
        for _ in range(phase.epochs):
            step = log.record(history_row(log.next_step, phase.name, 0.0, {}))
            if values is None:
                continue
            value = next(scores)
            improved = log.best.improves(value)
            if improved:
                log.best.take(value, step, phase.name, {"accuracy": value})
                log.best.keep([f"weights of step {step}"])
            pruner_step = log.pruner_step(step)
            if pruner_step is not None:
                reported.append((pruner_step, value))
            if stop.update(improved):
                break
        if phase.name == "head":
            log.end_head()
    return log, reported


def test_phases_follow_the_plan() -> None:
    assert phases(epoch_plan(TWO)) == (Phase("head", 3), Phase("finetune", 5))
    head, finetune = phases(epoch_plan(ONE))
    assert (head.runs, finetune.runs) == (False, True)
    head, finetune = phases(epoch_plan(TWO, trains_backbone=False))
    assert (head.runs, finetune.runs) == (True, False)


def test_best_epoch_in_fine_tuning_uses_the_head_it_started_from() -> None:
    values = [0.3, 0.5, 0.4, 0.45, 0.6, 0.7, 0.65, 0.55]
    log, reported = run(epoch_plan(TWO), values)
    assert [row["phase"] for row in log.history] == ["head"] * 3 + ["finetune"] * 5
    assert [row["step"] for row in log.history] == list(range(1, 9))
    # The pruner sees the fine-tuning epochs only, counted from 1.
    assert reported == [(1, 0.45), (2, 0.6), (3, 0.7), (4, 0.65), (5, 0.55)]
    assert (log.head_done, log.head_kept) == (3, 2)  # phase 2 started from the best head
    assert (log.best.step, log.best.value, log.best.phase) == (6, 0.7, "finetune")
    assert log.best.weights == ["weights of step 6"]
    assert log.restores_best()
    # A refit trains the 2 head epochs it started from, then 6 - 3 fine-tuning epochs.
    assert log.used() == EpochsUsed(best_step=6, head_epochs=2, finetune_epochs=3)


def test_best_epoch_in_the_head_phase_uses_no_fine_tuning() -> None:
    log, _ = run(epoch_plan(TWO), [0.3, 0.9, 0.4, 0.5, 0.6, 0.7, 0.65, 0.55])
    assert log.used() == EpochsUsed(best_step=2, head_epochs=2, finetune_epochs=0)


def test_ties_keep_the_earlier_epoch() -> None:
    best = BestEpoch()
    assert best.improves(0.5) and not best.found
    best.take(0.5, 1, "head", {})
    assert not best.improves(0.5) and best.improves(0.51)


def test_a_refit_without_validation_uses_every_epoch_it_ran() -> None:
    log, reported = run(epoch_plan(TWO, epochs=(2, 4)), None)
    assert reported == [] and not log.restores_best()
    assert log.best.value is None and log.best.metrics is None
    assert (log.head_done, log.head_kept) == (2, 2)
    assert log.used() == EpochsUsed(best_step=6, head_epochs=2, finetune_epochs=4)


def test_single_phase_reports_every_epoch_and_has_no_head() -> None:
    log, reported = run(epoch_plan(ONE), [0.1, 0.2, 0.3, 0.25, 0.2])
    assert [s for s, _ in reported] == [1, 2, 3, 4, 5]
    assert log.used() == EpochsUsed(best_step=3, head_epochs=0, finetune_epochs=3)


def test_every_epoch_reports_both_phases_under_one_counter() -> None:
    _, reported = run(epoch_plan(TWO, every_epoch=True), [0.1] * 8)
    assert [s for s, _ in reported] == list(range(1, 9))


def test_patience_counts_within_a_phase() -> None:
    stop = Patience(2)
    assert [stop.update(x) for x in (True, False, True, False, False)] == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert not any(Patience(None).update(False) for _ in range(10))
    # A plateau ends the phase early; the next phase starts with a fresh count.
    values = [0.5, 0.4, 0.3, 0.6, 0.5, 0.4]
    log, reported = run(epoch_plan(TWO), values, patience=2)
    assert [row["phase"] for row in log.history] == ["head"] * 3 + ["finetune"] * 3
    assert reported == [(1, 0.6), (2, 0.5), (3, 0.4)]
    assert log.used() == EpochsUsed(best_step=4, head_epochs=1, finetune_epochs=1)


def test_history_rows_keep_loss_and_accuracy_and_count_seconds_from_the_start() -> None:
    row = history_row(4, "finetune", 12.34567, {"loss": 1, "accuracy": 0.5, "lr": 0.1})
    assert row == {
        "step": 4,
        "phase": "finetune",
        "seconds": 12.34567,
        "loss": 1.0,
        "accuracy": 0.5,
    }
    relative_seconds([row], started=10.0)
    assert row["seconds"] == pytest.approx(2.346)


def test_the_bookkeeping_and_the_results_import_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "import blood_automl.trainer.phases, blood_automl.trainer.results\n"
        "from blood_automl.trainer import TrainResult, TrainingDiverged\n"
        "assert TrainResult.__module__ == 'blood_automl.trainer.results'\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
