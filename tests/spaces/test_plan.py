"""The epoch plan: which phases a configuration trains, and the steps the pruner compares."""

from __future__ import annotations

import dataclasses

import pytest

from blood_automl.spaces.config import LEGACY_FIELDS, TrialConfig
from blood_automl.spaces.plan import epoch_plan

TWO = TrialConfig(schedule="two_phase", head_epochs=3, finetune_epochs=5, unfreeze_fraction=0.5)
ONE = TrialConfig(schedule="single_phase", head_epochs=3, finetune_epochs=5, unfreeze_fraction=1.0)


def test_single_phase_has_no_head_phase_and_reports_every_epoch_from_1() -> None:
    plan = epoch_plan(ONE)
    assert (plan.head_epochs, plan.backbone_epochs, plan.total_epochs) == (0, 5, 5)
    assert [plan.pruner_step(e) for e in range(1, 6)] == [1, 2, 3, 4, 5]
    assert plan.max_step == 5


def test_two_phase_reports_only_fine_tuning_epochs_counted_from_1() -> None:
    # The pruner never compares a head-phase accuracy with a fine-tuned one: the head
    # epochs are not reported, and fine-tuning epoch k is step k in every trial.
    plan = epoch_plan(TWO)
    assert (plan.head_epochs, plan.backbone_epochs) == (3, 5)
    assert [plan.pruner_step(e) for e in range(1, 9)] == [None, None, None, 1, 2, 3, 4, 5]
    assert plan.max_step == 5
    single = epoch_plan(ONE)
    # The k-th epoch of backbone training is the same step in both schedules.
    assert plan.pruner_step(3 + 2) == single.pruner_step(2) == 2


def test_head_only_training_reports_its_epochs() -> None:
    for schedule in ("two_phase", "single_phase"):
        config = dataclasses.replace(TWO, unfreeze_fraction=0.0, schedule=schedule)
        plan = epoch_plan(config)
        assert (plan.head_epochs, plan.backbone_epochs) == (3, 0)
        assert [plan.pruner_step(e) for e in (1, 2, 3)] == [1, 2, 3]
        assert plan.max_step == 3
    # The trainer knows better than the fraction: a cut that unfreezes nothing.
    assert epoch_plan(TWO, trains_backbone=False).backbone_epochs == 0


def test_schema_1_studies_keep_one_counter_over_both_phases() -> None:
    legacy = TrialConfig.from_dict(
        {k: v for k, v in TWO.to_dict().items() if k not in LEGACY_FIELDS}
    )
    assert legacy.schedule == "two_phase" and legacy.batch_norm == "frozen"
    assert legacy.warmup_epochs == 0
    plan = epoch_plan(legacy, every_epoch=True)
    assert [plan.pruner_step(e) for e in range(1, 9)] == list(range(1, 9))
    assert plan.max_step == 8
    assert plan.phase_text(2) == "head epoch 3/3"
    assert plan.phase_text(4) == "fine-tune epoch 2/5"


def test_refit_epochs_replace_the_counts() -> None:
    assert epoch_plan(TWO, epochs=(2, 4)).total_epochs == 6
    assert epoch_plan(ONE, epochs=(0, 7)).backbone_epochs == 7


@pytest.mark.parametrize(
    ("config", "step", "text"),
    [
        (TWO, None, "head phase (3 epochs)"),
        (dataclasses.replace(TWO, head_epochs=1), None, "head phase (1 epoch)"),
        (TWO, 1, "fine-tune epoch 2/5"),
        (ONE, None, "epoch 1/5"),
        (ONE, 4, "epoch 5/5"),
        (ONE, 9, "epoch 5/5"),
    ],
)
def test_phase_text(config: TrialConfig, step: int | None, text: str) -> None:
    assert epoch_plan(config).phase_text(step) == text
