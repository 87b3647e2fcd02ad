"""The bookkeeping of a training's phases: epochs, steps, the best epoch, patience, epochs used.

Plain Python (no TensorFlow): the trainer's callbacks feed it what each epoch measured, and
it answers which step the epoch is, which pruner step it reports, whether it is the best so
far, whether the phase stops early, and, at the end, which epochs of each phase led to the
returned weights (what a refit trains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blood_automl.spaces.plan import EpochPlan

HEAD = "head"
FINETUNE = "finetune"


@dataclass(frozen=True)
class Phase:
    """One phase of a training: its name (``head`` or ``finetune``) and the most epochs it runs."""

    name: str
    epochs: int

    @property
    def runs(self) -> bool:
        """Whether the phase trains at all."""
        return self.epochs > 0


def phases(plan: EpochPlan) -> tuple[Phase, Phase]:
    """The head phase, then the phase that trains the backbone, with the plan's epoch counts."""
    return Phase(HEAD, plan.head_epochs), Phase(FINETUNE, plan.backbone_epochs)


@dataclass
class BestEpoch:
    """The epoch with the highest objective value so far (ties keep the earlier epoch)."""

    value: float | None = None
    step: int = 0
    phase: str | None = None
    metrics: dict[str, Any] | None = None
    weights: list[Any] | None = None

    @property
    def found(self) -> bool:
        """Whether an epoch was validated and its weights kept."""
        return self.weights is not None

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (the first value always does)."""
        return self.value is None or value > self.value

    def take(self, value: float, step: int, phase: str, metrics: dict[str, Any]) -> None:
        """Make the epoch at ``step`` the best; its weights follow with :meth:`keep`."""
        self.value, self.step, self.phase, self.metrics = value, step, phase, metrics

    def keep(self, weights: list[Any]) -> None:
        """The weights of the best epoch."""
        self.weights = weights


@dataclass
class Patience:
    """Early stopping within one phase: stop after ``limit`` epochs in a row without a new best."""

    limit: int | None
    wait: int = 0

    def update(self, improved: bool) -> bool:
        """Count one validated epoch; True when the phase should stop."""
        self.wait = 0 if improved else self.wait + 1
        return self.limit is not None and self.wait >= self.limit


@dataclass(frozen=True)
class EpochsUsed:
    """Which epochs led to the returned weights: the best step and each phase's share."""

    best_step: int
    head_epochs: int
    finetune_epochs: int


@dataclass
class PhaseLog:
    """What happened over a training's phases, epoch by epoch.

    Steps count the epochs of all phases from 1 (the history's ``step``); the pruner sees
    the steps ``plan.pruner_step`` gives (those of the last phase, counted from 1).
    """

    plan: EpochPlan
    validated: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)
    head_done: int = 0  # epochs the head phase ran
    head_kept: int = 0  # head epochs whose weights the next phase starts from

    @property
    def next_step(self) -> int:
        """The step of the epoch that is about to end."""
        return len(self.history) + 1

    def pruner_step(self, step: int) -> int | None:
        """The step the pruner sees for ``step``, None for an epoch it does not see."""
        return self.plan.pruner_step(step)

    def record(self, row: dict[str, Any]) -> int:
        """Append the epoch's history row; its step."""
        self.history.append(row)
        return len(self.history)

    def end_head(self) -> bool:
        """Close the head phase; True when the next phase should start from the best head."""
        self.head_done = self.head_kept = len(self.history)
        if self.validated and self.best.found:
            self.head_kept = self.best.step
            return True
        return False

    def restores_best(self) -> bool:
        """Whether the returned weights are the best epoch's (else: the last epoch's)."""
        return self.validated and self.best.found

    def used(self) -> EpochsUsed:
        """The best step and the epochs per phase that led to the returned weights."""
        if self.restores_best():
            finetune = max(0, self.best.step - self.head_done)
            return EpochsUsed(self.best.step, self.head_kept, finetune)
        total = len(self.history)
        return EpochsUsed(total, self.head_done, total - self.head_done)


def history_row(step: int, phase: str, now: float, logs: dict[str, Any]) -> dict[str, Any]:
    """The history row of one epoch: step, phase, clock time, training loss and accuracy."""
    row: dict[str, Any] = {"step": step, "phase": phase, "seconds": now}
    row.update({k: float(v) for k, v in logs.items() if k in ("loss", "accuracy")})
    return row


def relative_seconds(history: list[dict[str, Any]], started: float) -> None:
    """Turn each row's clock time into seconds since ``started`` (3 decimals)."""
    for row in history:
        row["seconds"] = round(row["seconds"] - started, 3)
