"""Tests of two-phase training: losses, class weights, learning on real images, frozen batch norm,
pruning through the report hook, and a diverging loss failing its trial."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
optuna = pytest.importorskip("optuna")

from blood_automl.spaces.config import TrialConfig  # noqa: E402
from blood_automl.trainer import (  # noqa: E402
    TrainingDiverged,
    class_weights,
    compute_metrics,
    make_loss,
    predict,
    train,
)

from .conftest import same_arrays  # noqa: E402

FAST = TrialConfig(
    backbone="MobileNet-0.25",
    dense_units=(64,),
    dropout=0.1,
    randaugment_ops=1,
    randaugment_magnitude=0.3,
    head_epochs=1,
    finetune_epochs=1,
    unfreeze_fraction=0.3,
    schedule="two_phase",
    batch_norm="frozen",
    warmup_epochs=0,
    finetune_lr=1e-4,
    batch_size=32,
)


def _fit_real(config: TrialConfig, split: dict[str, Any], weights: Path, report: Any) -> Any:
    """``train`` on the real split with the shared ImageNet file, every epoch run."""
    return train(
        config,
        split["x_train"],
        split["y_train"],
        split["class_names"],
        x_val=split["x_val"],
        y_val=split["y_val"],
        weights=str(weights.parent),
        report=report,
        patience=None,
    )


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
def test_focal_loss_matches_a_hand_computation(gamma: float) -> None:
    y = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    p = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [0.05, 0.05, 0.9]], np.float32)
    loss = make_loss(TrialConfig(loss="focal", focal_gamma=gamma))
    got = float(keras.ops.convert_to_numpy(loss(y, p)))
    pt = (y * p).sum(axis=1)
    expected = float(np.mean(-((1 - pt) ** gamma) * np.log(pt)))
    assert got == pytest.approx(expected, rel=1e-5)
    if gamma == 0.0:  # focal with gamma 0 is plain cross-entropy
        ce = make_loss(TrialConfig(loss="crossentropy"))
        assert float(keras.ops.convert_to_numpy(ce(y, p))) == pytest.approx(expected, rel=1e-5)


def test_class_weights_modes() -> None:
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    none = class_weights(labels, 3, "none")
    balanced = class_weights(labels, 3, "balanced")
    sqrt = class_weights(labels, 3, "sqrt")
    np.testing.assert_array_equal(none, np.ones(3))
    # Rare classes weigh more, and the mean weight over samples stays 1.
    assert balanced[2] > balanced[1] > balanced[0]
    assert balanced[2] / balanced[0] == pytest.approx(6.0)
    assert sqrt[2] / sqrt[0] == pytest.approx(np.sqrt(6.0))
    for w in (balanced, sqrt):
        assert float(w[labels].mean()) == pytest.approx(1.0)


def test_metrics_against_hand_counts() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 0, 1, 1, 1, 0]]
    m = compute_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    f1 = [2 * (2 / 3 * 2 / 3) / (4 / 3), 2 * (2 / 3 * 1) / (5 / 3), 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


@pytest.mark.slow
def test_short_transfer_fit_on_real_images_learns_and_keeps_frozen_weights(
    real_split: dict[str, Any],
    mobilenet_weights_path: Path,
    mobilenet_file_weights: dict[str, list[np.ndarray]],
) -> None:
    config = TrialConfig(
        **{**FAST.to_dict(), "head_epochs": 3, "finetune_epochs": 2, "dense_units": (128,)}
    )
    steps: list[tuple[int, float]] = []
    result = _fit_real(
        config, real_split, mobilenet_weights_path, lambda s, v: steps.append((s, v))
    )
    # One learning curve over both phases; the pruner sees the fine-tuning epochs, from 1.
    assert [s for s, _ in steps] == [1, 2]
    assert [row["phase"] for row in result.history] == ["head"] * 3 + ["finetune"] * 2
    assert [v for _, v in steps] == [row["val_accuracy"] for row in result.history[3:]]
    assert result.best_value == max(row["val_accuracy"] for row in result.history)
    # Learns: 8 classes, chance is 12.5%.
    test = compute_metrics(
        real_split["y_test"], predict(result.model, real_split["x_test"]), real_split["class_names"]
    )
    assert result.best_value > 0.45
    assert test["accuracy"] > 0.45
    # Batch norm stayed frozen in both phases (moving statistics included), layers below
    # the unfreeze point kept the ImageNet values, and the unfrozen convolutions trained.
    backbone = result.model.get_layer("backbone")
    start = [layer.name for layer in backbone.layers].index(result.unfreeze_from)
    assert result.trainable_layers > 0
    changed = 0
    for i, layer in enumerate(backbone.layers):
        if not layer.weights:
            continue
        same = same_arrays(mobilenet_file_weights[layer.name], layer.get_weights())
        if isinstance(layer, keras.layers.BatchNormalization) or i < start:
            assert same, f"{layer.name} changed although frozen"
        else:
            changed += not same
    assert changed == result.trainable_layers


def test_refit_runs_exactly_the_given_epochs_without_validation(real_split: dict[str, Any]) -> None:
    n = 256
    result = train(
        FAST,
        real_split["x_train"][:n],
        real_split["y_train"][:n],
        real_split["class_names"],
        weights="none",
        epochs=(1, 1),
    )
    assert [row["phase"] for row in result.history] == ["head", "finetune"]
    assert (result.head_epochs, result.finetune_epochs) == (1, 1)
    assert result.best_value is None and result.val_metrics is None


def test_pruner_stops_the_trial_through_the_report_hook(real_split: dict[str, Any]) -> None:
    from optuna.testing.pruners import DeterministicPruner

    n = 128
    seen: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        def report(step: int, value: float) -> None:
            seen.append(step)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = train(
            TrialConfig(**{**FAST.to_dict(), "head_epochs": 3}),
            real_split["x_train"][:n],
            real_split["y_train"][:n],
            real_split["class_names"],
            x_val=real_split["x_val"][:64],
            y_val=real_split["y_val"][:64],
            weights="none",
            report=report,
            patience=None,
        )
        return float(result.best_value or 0.0)

    study = optuna.create_study(direction="maximize", pruner=DeterministicPruner(True))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert seen == [1]  # stopped after the first fine-tuning epoch (the fourth of four)
    assert list(trial.intermediate_values) == [1]


def test_nan_loss_fails_the_trial_and_the_study_goes_on(real_split: dict[str, Any]) -> None:
    n = 64

    def objective(trial: optuna.Trial) -> float:
        # Adam's step is about the learning rate whatever the gradient: 1e30 overflows float32.
        lr = 1e30 if trial.number == 0 else 1e-3
        result = train(
            TrialConfig(**{**FAST.to_dict(), "finetune_epochs": 0, "head_lr": lr}),
            real_split["x_train"][:n],
            real_split["y_train"][:n],
            real_split["class_names"],
            x_val=real_split["x_val"][:32],
            y_val=real_split["y_val"][:32],
            weights="none",
        )
        return float(result.best_value or 0.0)

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2, catch=(TrainingDiverged,))
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert study.trials[1].state == optuna.trial.TrialState.COMPLETE
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf)"):
        objective(optuna.trial.FixedTrial({}, number=0))  # type: ignore[arg-type]


@pytest.mark.slow
def test_single_phase_trains_the_whole_network_with_adapting_batch_norm(
    real_split: dict[str, Any],
    mobilenet_weights_path: Path,
    mobilenet_file_weights: dict[str, list[np.ndarray]],
) -> None:
    from blood_automl.trainer.model import ADAPT_BN_MOMENTUM

    config = TrialConfig(
        **{
            **FAST.to_dict(),
            "schedule": "single_phase",
            "batch_norm": "adapt",
            "unfreeze_fraction": 1.0,
            "warmup_epochs": 1,
            "finetune_epochs": 3,
            "finetune_lr": 5e-4,
        }
    )
    steps: list[int] = []
    result = _fit_real(config, real_split, mobilenet_weights_path, lambda s, _: steps.append(s))
    # No head phase: every epoch trains the backbone and is reported from step 1.
    assert [row["phase"] for row in result.history] == ["finetune"] * 3
    assert steps == [1, 2, 3]
    assert result.head_epochs == 0 and result.finetune_epochs == result.best_step
    assert result.best_value is not None and result.best_value > 0.45
    # The whole network trained, and batch norm adapted: its moving statistics left the
    # ImageNet values (they move at ADAPT_BN_MOMENTUM).
    backbone = result.model.get_layer("backbone")
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and all(layer.trainable for layer in norms)
    assert all(layer.momentum == ADAPT_BN_MOMENTUM for layer in norms)
    for layer in norms:
        moving_mean = np.asarray(layer.moving_mean)
        stored = [a for a in mobilenet_file_weights[layer.name] if a.shape == moving_mean.shape]
        assert not any(np.array_equal(moving_mean, a) for a in stored), layer.name
    convs = [layer for layer in backbone.layers if layer.weights and layer not in norms]
    assert all(
        not same_arrays(mobilenet_file_weights[layer.name], layer.get_weights()) for layer in convs
    )


def test_warm_up_then_cosine_decay_over_the_planned_epochs() -> None:
    from blood_automl.trainer.fit import backbone_schedule

    steps, planned, lr = 10, 6, 1e-3
    schedule = backbone_schedule(lr, steps, planned, warmup_epochs=1)
    rates = [float(schedule(i)) for i in range(planned * steps + 1)]
    # Linear warm-up from 1% to the peak over the first epoch.
    assert rates[0] == pytest.approx(lr * 0.01)
    assert all(a < b for a, b in itertools.pairwise(rates[: steps + 1]))
    assert rates[steps] == pytest.approx(lr)
    # Then cosine decay to 1% of the peak at the end of the planned epochs.
    assert all(a >= b for a, b in itertools.pairwise(rates[steps:]))
    assert rates[-1] == pytest.approx(lr * 0.01, rel=1e-3)
    # Without warm-up the decay starts at the peak.
    assert float(backbone_schedule(lr, steps, planned, warmup_epochs=0)(0)) == pytest.approx(lr)


@pytest.mark.slow
def test_a_refit_follows_the_searched_learning_rates(real_split: dict[str, Any]) -> None:
    """A refit of the first k epochs of a trial planned for n uses the trial's schedule."""
    n = 128
    config = TrialConfig(
        **{**FAST.to_dict(), "schedule": "single_phase", "finetune_epochs": 4, "warmup_epochs": 1}
    )
    result = train(
        config,
        real_split["x_train"][:n],
        real_split["y_train"][:n],
        real_split["class_names"],
        weights="none",
        epochs=(0, 2),
    )
    assert (result.head_epochs, result.finetune_epochs) == (0, 2)
    from blood_automl.trainer.fit import backbone_schedule

    steps = -(-n // config.batch_size)
    schedule = backbone_schedule(config.finetune_lr, steps, 4, 1)
    # After 2 of 4 planned epochs the rate is mid-decay, not at the decay's end.
    assert float(result.model.optimizer.learning_rate) == pytest.approx(
        float(schedule(2 * steps)), rel=1e-4
    )
    assert float(schedule(2 * steps)) > 10 * config.finetune_lr * 0.01
