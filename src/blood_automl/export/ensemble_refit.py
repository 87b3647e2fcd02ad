"""refit-best --top K: refit the K best distinct trials and export their soft vote as one model.

How the members are chosen (:func:`choose_members`): the study's completed trials are ranked
by its objective (best first, the lower trial number first on a tie); a trial whose
parameters equal those of a better one is skipped. The best trial is always the first
member. For each next place, every remaining trial whose objective is within
:data:`DIVERSITY_MARGIN` (0.5 percentage points) of the best remaining one is a candidate,
and the best-ranked candidate whose backbone is not yet in the ensemble is taken; when
every candidate's backbone is already in, the best remaining trial is taken.

Each member is trained as refit-best trains one model (:mod:`blood_automl.export.refit`):
its own configuration, epochs and seed, on train + validation. With calibration (the
default) each member's calibration twin (trained on the train split only) predicts the
validation split; one temperature ``T``, shared by all members, is fitted to minimise the
validation negative log-likelihood of the soft vote ``mean_i softmax(z_i / T)``, and folded
into every member before the vote. The twins' validation predictions also say how the
ensemble grows (``validation_by_k``: the soft vote of the first k twins, k = 1..K), without
the test split. Without calibration there are no twins, so no such validation figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from blood_automl.analysis.report import study_paths
from blood_automl.data import PreparedData
from blood_automl.errors import ConfigError, StorageError
from blood_automl.export.bundle import EXPORT_KIND, classification_report_text, export_model
from blood_automl.export.calibration import (
    Calibration,
    calibration_metrics,
    expected_calibration_error,
    minimise_temperature,
    twin_validation_logits,
    with_temperature,
)
from blood_automl.export.drift import summarize
from blood_automl.export.refit import (
    RefitResult,
    config_of_trial,
    epochs_and_seed,
    prepared_data,
    provenance_of,
    record_refit,
    train_on_train_and_val,
    training_images,
    tta_metrics,
)
from blood_automl.outputs import check_output_dir
from blood_automl.spaces import Space, TrialConfig
from blood_automl.studies import StudyRecord, TrialRecord, get_study, open_existing_storage
from blood_automl.trainer.quiet import import_tensorflow_quietly

DIVERSITY_MARGIN = 0.005
"""Trials within this much of the best remaining objective (0.5 percentage points) are
equals, and among equals one with a backbone not yet in the ensemble is preferred."""

CHOICE_RULE = (
    "completed trials ranked by the study's objective, trials with the same parameters as a "
    "better one skipped; for each place, among the remaining trials within "
    f"{DIVERSITY_MARGIN * 100:g} percentage points of the best remaining one, the best whose "
    "backbone is not yet in the ensemble (else the best remaining)"
)
SCORES = ("accuracy", "balanced_accuracy", "macro_f1")


# -- choosing the members (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A completed trial as the member choice sees it."""

    number: int
    value: float
    params: Mapping[str, Any]
    backbone: str | None


def candidates_of(study: optuna.Study) -> list[Candidate]:
    """The study's completed trials (with a value) as candidates."""
    return [
        Candidate(
            number=t.number,
            value=float(t.value),
            params=dict(t.params),
            backbone=TrialRecord.from_trial(t).backbone or t.params.get("backbone"),
        )
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]


def distinct_ranked(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first (lower trial number first on a tie), each set of parameters once."""
    ranked = sorted(candidates, key=lambda c: (-c.value, c.number))
    kept: list[Candidate] = []
    for c in ranked:
        if all(dict(c.params) != dict(k.params) for k in kept):
            kept.append(c)
    return kept


def choose_members(
    candidates: Sequence[Candidate],
    k: int,
    *,
    study: str = "the study",
    margin: float = DIVERSITY_MARGIN,
) -> list[Candidate]:
    """The ``k`` members, best first, by the rule of this module's docstring.

    Raises a one-line :class:`ConfigError` when fewer than ``k`` distinct completed trials exist.
    """
    remaining = distinct_ranked(candidates)
    if len(remaining) < k:
        raise ConfigError(
            f"--top {k} needs {k} completed trials with distinct parameters, but {study} has "
            f"{len(remaining)}; give a smaller --top (at most {max(len(remaining), 1)}) or run "
            "more trials with blood-automl search"
        )
    chosen: list[Candidate] = []
    while len(chosen) < k:
        best = remaining[0]
        near = [c for c in remaining if best.value - c.value <= margin]
        backbones = {c.backbone for c in chosen}
        fresh = [c for c in near if c.backbone not in backbones]
        pick = fresh[0] if fresh else best
        chosen.append(pick)
        remaining.remove(pick)
    return chosen


# -- the soft vote's likelihood and its shared temperature (numpy) ---------------------------


def soft_vote_log_probs(
    member_logits: Sequence[np.ndarray], temperature: float = 1.0
) -> np.ndarray:
    """``log mean_i softmax(z_i / T)`` row by row, (N, C), computed in log space (float64)."""
    z = np.stack([np.asarray(m, dtype=np.float64) for m in member_logits]) / temperature
    top = z.max(axis=2, keepdims=True)
    log_soft = z - top - np.log(np.exp(z - top).sum(axis=2, keepdims=True))
    peak = log_soft.max(axis=0)
    return np.asarray(peak + np.log(np.exp(log_soft - peak).mean(axis=0)))


def soft_vote_probs(member_logits: Sequence[np.ndarray], temperature: float = 1.0) -> np.ndarray:
    """``mean_i softmax(z_i / T)``, (N, C)."""
    return np.asarray(np.exp(soft_vote_log_probs(member_logits, temperature)))


def soft_vote_nll(
    member_logits: Sequence[np.ndarray], labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean ``-log mean_i softmax(z_i / T)[label]``."""
    log_p = soft_vote_log_probs(member_logits, temperature)
    picked = log_p[np.arange(log_p.shape[0]), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(picked))


def fit_shared_temperature(member_logits: Sequence[np.ndarray], labels: np.ndarray) -> Calibration:
    """One ``T`` for every member, minimising the soft vote's NLL on ``labels``; measured there."""
    labels = np.asarray(labels, dtype=np.int64)
    shapes = {np.asarray(m).shape for m in member_logits}
    if not member_logits or len(shapes) != 1 or labels.shape != (next(iter(shapes))[0],):
        raise ValueError(f"need members' (N, C) logits of one shape and N labels, got {shapes}")
    t = minimise_temperature(lambda temp: soft_vote_nll(member_logits, labels, temp))
    return Calibration(
        temperature=t,
        n_validation=int(labels.shape[0]),
        validation_nll_before=soft_vote_nll(member_logits, labels),
        validation_nll_after=soft_vote_nll(member_logits, labels, t),
        validation_ece_before=expected_calibration_error(soft_vote_probs(member_logits), labels),
        validation_ece_after=expected_calibration_error(soft_vote_probs(member_logits, t), labels),
    )


def validation_by_k(
    member_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    tta_probs: Sequence[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """The twins' soft vote (T = 1) on the validation split for the first k members, k = 1..K."""
    from blood_automl.trainer import compute_metrics

    rows: list[dict[str, Any]] = []
    for k in range(1, len(member_logits) + 1):
        found = compute_metrics(labels, soft_vote_probs(member_logits[:k]), class_names)
        row: dict[str, Any] = {"k": k, **{s: found[s] for s in SCORES}}
        row["nll"] = soft_vote_nll(member_logits[:k], labels)
        if tta_probs is not None:
            voted = np.mean(np.stack(tta_probs[:k]), axis=0)
            tta_found = compute_metrics(labels, voted, class_names)
            row["tta"] = {s: tta_found[s] for s in SCORES}
        rows.append(row)
    return rows


# -- training the members (Keras inside the functions) ----------------------------------------


@dataclass(frozen=True)
class Plan:
    """A member to train: its trial, configuration, epochs and seed."""

    candidate: Candidate
    trial: optuna.trial.FrozenTrial
    space: Space
    config: TrialConfig
    epochs: tuple[int, int]
    seed: int


@dataclass
class Trained:
    """A member trained on train + validation, with its predictions (and its twin's)."""

    plan: Plan
    model: Any
    history: list[dict[str, Any]]
    seconds: float
    test_probs: np.ndarray
    test_tta: np.ndarray | None
    val_logits: np.ndarray | None
    val_tta: np.ndarray | None


def plan_members(study: optuna.Study, chosen: Sequence[Candidate]) -> list[Plan]:
    """Each chosen trial's configuration, epochs and seed (checked against what it recorded)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    plans = []
    for c in chosen:
        trial = by_number[c.number]
        space, config = config_of_trial(study, trial)
        epochs, seed = epochs_and_seed(trial, config)
        plans.append(Plan(c, trial, space, config, epochs, seed))
    return plans


def train_member(
    plan: Plan, data: PreparedData, *, weights: str | None, calibrate: bool, tta: bool
) -> Trained:
    """The member's twin (with calibration) for its validation predictions, then the member."""
    from blood_automl import trainer
    from blood_automl.export.tta import predict_tta

    val_tta: list[np.ndarray] = []

    def take_tta(twin: Any) -> None:
        if tta:
            val_tta.append(predict_tta(twin, np.asarray(data.x_val)))

    val_logits = (
        twin_validation_logits(
            plan.config, data, weights=weights, seed=plan.seed, epochs=plan.epochs, also=take_tta
        )
        if calibrate
        else None
    )
    result = train_on_train_and_val(
        plan.config, data, weights=weights, seed=plan.seed, epochs=plan.epochs
    )
    return Trained(
        plan=plan,
        model=result.model,
        history=result.history,
        seconds=result.seconds,
        test_probs=trainer.predict(result.model, data.x_test),
        test_tta=predict_tta(result.model, np.asarray(data.x_test)) if tta else None,
        val_logits=val_logits,
        val_tta=val_tta[0] if val_tta else None,
    )


def _scores(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    from blood_automl.trainer import compute_metrics

    found = compute_metrics(labels, probs, class_names)
    return {s: found[s] for s in SCORES}


def ensemble_entry(
    members: Sequence[Trained], data: PreparedData, objective: str | None
) -> dict[str, Any]:
    """metrics.json's ``ensemble``: the rule, the members' own test scores, ``validation_by_k``."""
    rows = []
    for m in members:
        row: dict[str, Any] = {
            "trial": m.plan.trial.number,
            "backbone": m.plan.candidate.backbone,
            "objective_value": m.plan.candidate.value,
            "test": _scores(data.y_test, m.test_probs, data.class_names),
        }
        if m.test_tta is not None:
            row["test_tta"] = _scores(data.y_test, m.test_tta, data.class_names)
        rows.append(row)
    entry: dict[str, Any] = {
        "k": len(members),
        "objective": objective,
        "choice": CHOICE_RULE,
        "diversity_margin": DIVERSITY_MARGIN,
        "members": rows,
    }
    logits = [m.val_logits for m in members]
    if any(v is None for v in logits):
        entry["validation_by_k_absent"] = (
            "exported with --no-calibration: no member was trained on the train split alone, "
            "so there are no honest validation predictions"
        )
        return entry
    tta = [m.val_tta for m in members]
    entry["validation_by_k"] = validation_by_k(
        [np.asarray(v) for v in logits],
        np.asarray(data.y_val),
        data.class_names,
        [np.asarray(t) for t in tta] if all(t is not None for t in tta) else None,
    )
    entry["validation_by_k_note"] = (
        "soft vote of the members' twins (trained on the train split only), without the "
        "temperature; k = the first k members"
    )
    return entry


def member_config(m: Trained) -> dict[str, Any]:
    """config.json's record of one member."""
    return {
        "trial": m.plan.trial.number,
        "backbone": m.plan.candidate.backbone,
        "params": dict(m.plan.trial.params),
        "config": m.plan.config.to_dict(),
        "validation_value": m.plan.candidate.value,
        "epochs": {"head": m.plan.epochs[0], "finetune": m.plan.epochs[1]},
        "seed": m.plan.seed,
    }


def refit_ensemble(
    study_name: str,
    storage_url: str | None = None,
    *,
    top: int,
    out: Path | None = None,
    overwrite: bool = False,
    calibrate: bool = True,
    tta: bool = False,
    portable: bool = True,
) -> RefitResult:
    """Refit the ``top`` chosen trials (see the module docstring) and export their soft vote.

    Nothing is written when ``out`` may not be written, the study has fewer than ``top``
    distinct completed trials, or its prepared data is missing or differs: all checked
    before TensorFlow loads.
    """
    if top < 2:
        raise ValueError(f"an ensemble needs --top 2 or more, not {top}")
    out = Path(out) if out is not None else Path("exports") / study_name
    protected = study_paths(storage_url, study_name)
    check_output_dir(out, EXPORT_KIND, overwrite=overwrite, protected=protected)
    study = get_study(open_existing_storage(storage_url), study_name)
    found = candidates_of(study)
    if not found:
        raise StorageError(
            f"study '{study_name}' has no completed trial yet; run blood-automl search first"
        )
    chosen = choose_members(found, top, study=f"study '{study_name}'")
    plans = plan_members(study, chosen)
    data = prepared_data(study, storage_url)
    stored = StudyRecord.from_study(study)

    import_tensorflow_quietly()  # its start-up lines stay out of the terminal
    from blood_automl import trainer
    from blood_automl.export.ensemble import soft_vote

    members = [
        train_member(p, data, weights=stored.weights, calibrate=calibrate, tta=tta) for p in plans
    ]
    fitted = (
        fit_shared_temperature([np.asarray(m.val_logits) for m in members], np.asarray(data.y_val))
        if calibrate
        else None
    )
    folded = [
        with_temperature(m.model, fitted.temperature) if fitted is not None else m.model
        for m in members
    ]
    model = soft_vote(folded)
    probs = trainer.predict(model, data.x_test)
    uncalibrated = np.mean(np.stack([m.test_probs for m in members]), axis=0)
    metrics = trainer.compute_metrics(data.y_test, probs, data.class_names)
    metrics["split"] = "test"
    metrics["calibration"] = calibration_metrics(
        fitted, uncalibrated if fitted is not None else probs, probs, data.y_test
    )
    if tta:
        metrics["tta"] = tta_metrics(model, data.x_test, data.y_test, data.class_names)
    metrics["ensemble"] = ensemble_entry(members, data, stored.objective)
    if fitted is not None:
        metrics["calibration"]["fitted_on"] = (
            "validation split, predicted by each member's configuration trained on the train "
            "split only (same epochs and seed); one temperature for all members, fitted on "
            "their soft vote"
        )
    first = members[0].plan
    provenance = provenance_of(
        study,
        storage_url,
        first.trial,
        first.space,
        first.config,
        data,
        seed=first.seed,
        epochs=first.epochs,
        temperature=fitted.temperature if fitted is not None else None,
    )
    provenance["members"] = [member_config(m) for m in members]
    provenance["ensemble"] = {"k": top, "choice": CHOICE_RULE, "diversity_margin": DIVERSITY_MARGIN}
    export_model(
        out,
        model=model,
        config=provenance,
        metrics=metrics,
        report=classification_report_text(data.y_test, probs, data.class_names),
        history=members[0].history,
        class_names=data.class_names,
        overwrite=overwrite,
        protected=protected,
        data_summary=summarize(training_images(data)),
        test_images=np.asarray(data.x_test),
        test_labels=np.asarray(data.y_test),
        portable=portable,
    )
    for m, row in zip(members, metrics["ensemble"]["members"], strict=True):
        record_refit(study, m.plan.trial.number, row["test"], out, str(provenance["created"]))
    trainer.release()
    return RefitResult(
        out=out,
        trial=first.trial.number,
        validation_value=first.candidate.value,
        test_metrics=metrics,
        seconds=sum(m.seconds for m in members),
        calibration=metrics["calibration"],
        members=tuple(m.plan.trial.number for m in members),
    )
