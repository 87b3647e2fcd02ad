"""The epoch plan of a configuration: its phases, their epochs, and the steps the pruner sees."""

from __future__ import annotations

from dataclasses import dataclass

from blood_automl.spaces.config import TrialConfig


@dataclass(frozen=True)
class EpochPlan:
    """How many epochs each phase of a trial may train, and how epochs become pruner steps.

    ``head_epochs`` train the head on a frozen backbone; ``backbone_epochs`` (at most:
    early stopping and the pruner may end the phase sooner) train the head with the
    unfrozen part of the backbone. Only the epochs of the trial's last phase, the one
    whose model the trial returns, are reported to the pruner, counted from 1: the pruner
    then compares a trial's k-th epoch of backbone training with the other trials' k-th,
    never a head-phase accuracy with a fine-tuned one. ``every_epoch`` reports all epochs
    under one counter instead (how studies stored by space schema 1 were pruned).
    """

    head_epochs: int
    backbone_epochs: int
    warmup_epochs: int = 0
    every_epoch: bool = False

    @property
    def total_epochs(self) -> int:
        """The most epochs the trial trains over both phases."""
        return self.head_epochs + self.backbone_epochs

    @property
    def max_step(self) -> int:
        """The largest step the pruner can see (Hyperband's maximum resource)."""
        if self.every_epoch:
            return self.total_epochs
        return self.backbone_epochs or self.head_epochs

    def pruner_step(self, epoch: int) -> int | None:
        """The pruner step of epoch ``epoch`` (1-based, over both phases), None if not reported."""
        if self.every_epoch or self.backbone_epochs == 0:
            return epoch
        if epoch <= self.head_epochs:
            return None
        return epoch - self.head_epochs

    def phase_text(self, step: int | None) -> str:
        """Where a running trial stands, from the last pruner step it reported (None: none yet)."""
        if self.every_epoch:
            done = step or 0
            if done < self.head_epochs or self.backbone_epochs <= 0:
                return f"head epoch {min(done + 1, self.head_epochs)}/{self.head_epochs}"
            n = min(done - self.head_epochs + 1, self.backbone_epochs)
            return f"fine-tune epoch {n}/{self.backbone_epochs}"
        if self.backbone_epochs == 0:
            return f"head epoch {min((step or 0) + 1, self.head_epochs)}/{self.head_epochs}"
        if step is None and self.head_epochs > 0:
            return f"head phase ({self.head_epochs} epoch{'s' if self.head_epochs != 1 else ''})"
        name = "fine-tune epoch" if self.head_epochs > 0 else "epoch"
        return f"{name} {min((step or 0) + 1, self.backbone_epochs)}/{self.backbone_epochs}"


def epoch_plan(
    config: TrialConfig,
    *,
    trains_backbone: bool | None = None,
    epochs: tuple[int, int] | None = None,
    every_epoch: bool = False,
) -> EpochPlan:
    """The plan of ``config``.

    ``trains_backbone``: whether any backbone layer unfreezes (the trainer knows it from
    the built model; by default ``unfreeze_fraction > 0``). ``epochs=(head, backbone)``
    replaces the configuration's counts (a refit trains the epochs that led to the best
    score). A ``single_phase`` schedule has no head phase when the backbone trains.
    """
    unfrozen = config.unfreeze_fraction > 0 if trains_backbone is None else trains_backbone
    head, backbone = epochs if epochs is not None else (config.head_epochs, config.finetune_epochs)
    if not unfrozen:
        backbone = 0
    elif config.schedule == "single_phase":
        head = 0
    return EpochPlan(
        head_epochs=max(0, int(head)),
        backbone_epochs=max(0, int(backbone)),
        warmup_epochs=config.warmup_epochs if unfrozen else 0,
        every_epoch=every_epoch,
    )
