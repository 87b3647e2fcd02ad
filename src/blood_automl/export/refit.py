"""refit-best: rebuild the best trial's config through the same space code, retrain, test once, export."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from blood_automl.analysis.report import study_paths
from blood_automl.data import PreparedData, load_prepared
from blood_automl.errors import ConfigError, DataError
from blood_automl.export.bundle import EXPORT_KIND, classification_report_text, export_model
from blood_automl.export.calibration import calibration_metrics, twin_calibration, with_temperature
from blood_automl.export.card import manifest_summary
from blood_automl.export.drift import summarize
from blood_automl.export.tta import predict_tta
from blood_automl.outputs import check_output_dir
from blood_automl.spaces import Space, TrialConfig, suggest
from blood_automl.studies import (
    DEFAULT_STUDY,
    RefitRecord,
    StudyRecord,
    TrialRecord,
    best_trial,
    get_study,
    mask_url,
    open_existing_storage,
    package_versions,
)
from blood_automl.studies import data_dir as study_data_dir
from blood_automl.studies.records import refit_attr
from blood_automl.trainer.quiet import import_tensorflow_quietly


@dataclass(frozen=True)
class RefitResult:
    """Where the export went and how the model did on the test split."""

    out: Path
    trial: int
    validation_value: float
    test_metrics: dict[str, Any]
    seconds: float
    calibration: dict[str, Any] | None = None
    members: tuple[int, ...] = ()
    """The trials of an ensemble's members, best first; empty for a single model."""


def tta_metrics(
    model: Any, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of the 8-view test-time augmentation."""
    from blood_automl.trainer import compute_metrics

    found = compute_metrics(labels, predict_tta(model, np.asarray(images)), class_names)
    return {k: found[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}


def config_of_trial(
    study: optuna.Study, trial: optuna.trial.FrozenTrial
) -> tuple[Space, TrialConfig]:
    """The trial's TrialConfig, rebuilt with ``FixedTrial(trial.params)`` on the study's stored space.

    Checked against the config the trial itself recorded, so refit trains exactly that model.
    """
    stored = StudyRecord.from_study(study).space
    if stored is None:
        raise ConfigError(
            f"study '{study.study_name}' holds no search space (it was not made by blood-automl "
            "search); refit a study made by blood-automl search"
        )
    space = Space.from_dict(stored, source=f"study '{study.study_name}'")
    config = suggest(optuna.trial.FixedTrial(dict(trial.params), number=trial.number), space)
    recorded = TrialRecord.from_trial(trial).config
    if recorded is not None and TrialConfig.from_dict(recorded) != config:
        raise ConfigError(
            f"trial {trial.number}'s parameters no longer give the configuration it trained "
            "(space code changed); refit it with the blood-automl version that ran the search"
        )
    return space, config


def prepared_data(study: optuna.Study, storage_url: str | None) -> PreparedData:
    """The study's prepared data, checked against the fingerprint the study was searched on."""
    study_name = study.study_name
    data_dir = study_data_dir(storage_url, study_name)
    if not (data_dir / "manifest.json").is_file():
        raise DataError(
            f"study '{study_name}' has no prepared data in {data_dir}; run blood-automl search "
            "with the same --study and --storage (and --data) on this machine first"
        )
    data = load_prepared(data_dir)
    expected = StudyRecord.from_study(study).data_fingerprint
    if expected is not None and expected != data.fingerprint:
        raise DataError(
            f"prepared data in {data_dir} has fingerprint {data.fingerprint[:12]}, but study "
            f"'{study_name}' was searched on {str(expected)[:12]}; prepare the study's own data again"
        )
    return data


def epochs_and_seed(
    trial: optuna.trial.FrozenTrial, config: TrialConfig
) -> tuple[tuple[int, int], int]:
    """The epochs per phase that led to the trial's best validation score, and its seed."""
    record = TrialRecord.from_trial(trial)
    epochs = record.epochs or (config.head_epochs, config.finetune_epochs)
    return (int(epochs[0]), int(epochs[1])), int(record.seed)


def train_on_train_and_val(
    config: TrialConfig,
    data: PreparedData,
    *,
    weights: str | None,
    seed: int,
    epochs: tuple[int, int],
) -> Any:
    """Train ``config`` on train + validation as the refit does (a ``trainer.TrainResult``)."""
    from blood_automl import trainer

    y = np.concatenate([np.asarray(data.y_train), np.asarray(data.y_val)])
    return trainer.train(
        config,
        training_images(data),
        y,
        data.class_names,
        weights=weights,
        seed=seed,
        epochs=epochs,
    )


def training_images(data: PreparedData) -> np.ndarray:
    """The images a refit trains on: train + validation."""
    return np.concatenate([np.asarray(data.x_train), np.asarray(data.x_val)])


def provenance_of(
    study: optuna.Study,
    storage_url: str | None,
    trial: optuna.trial.FrozenTrial,
    space: Space,
    config: TrialConfig,
    data: PreparedData,
    *,
    seed: int,
    epochs: tuple[int, int],
    temperature: float | None,
) -> dict[str, Any]:
    """config.json of an export of ``trial``: what was trained, on what, with which versions."""
    stored = StudyRecord.from_study(study)
    return {
        "study": study.study_name,
        "storage": mask_url(storage_url) if storage_url else "default",
        "trial": trial.number,
        "finished_trials": sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)),
        "params": dict(trial.params),
        "config": config.to_dict(),
        "validation": {"objective": stored.objective, "value": trial.value},
        "space_name": space.name,
        "space_version": space.version,
        "data_fingerprint": data.fingerprint,
        "data": manifest_summary(data.manifest),
        "class_names": list(data.class_names),
        "image_size": data.image_size,
        "weights": stored.weights,
        "seed": seed,
        "epochs": {"head": epochs[0], "finetune": epochs[1]},
        "trained_on": {"train": len(data.y_train), "validation": len(data.y_val)},
        "tested_on": len(data.y_test),
        "temperature": temperature,
        "versions": package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def record_refit(
    study: optuna.Study, number: int, metrics: dict[str, Any], out: Path, created: str
) -> None:
    """Store with trial ``number`` its test scores (``metrics``) and the export folder."""
    refit = RefitRecord(
        test_accuracy=metrics["accuracy"],
        test_balanced_accuracy=metrics["balanced_accuracy"],
        test_macro_f1=metrics["macro_f1"],
        out=str(out),
        created=created,
    )
    study.set_user_attr(refit_attr(number), refit.to_value())


def refit_best(
    study_name: str = DEFAULT_STUDY,
    storage_url: str | None = None,
    *,
    trial_number: int | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    calibrate: bool = True,
    tta: bool = False,
    portable: bool = True,
) -> RefitResult:
    """Retrain the best (or the given) completed trial on train + validation and export it.

    The epochs per phase are those that led to the trial's best validation score; the
    test split is used once, after training. Nothing is written when the study has no
    completed trial, ``out`` may not be written (checked first, before anything is loaded:
    see :mod:`blood_automl.outputs`), or the study's prepared data is missing or does not
    match its fingerprint.

    With ``calibrate``, a temperature is fitted first (see :mod:`blood_automl.export.calibration`:
    a twin trained on the train split, fitted on the validation split) and folded into the
    exported model; metrics.json's ``calibration`` holds it with the test ECE before and after.

    With ``portable`` (the default) model.onnx and model.tflite are written beside
    model.keras and checked against it (:mod:`blood_automl.export.portable`).

    With ``tta`` the test split is also scored with test-time augmentation (the mean over
    the 8 dihedral views, :mod:`blood_automl.export.tta`); its accuracy, balanced accuracy
    and macro F1 go to ``metrics["tta"]``. The export holds the training images' colour
    statistics (``data_summary.json``) that predict and evaluate compare new images with.
    """
    out = Path(out) if out is not None else Path("exports") / study_name
    protected = study_paths(storage_url, study_name)
    check_output_dir(out, EXPORT_KIND, overwrite=overwrite, protected=protected)
    storage = open_existing_storage(storage_url)  # a missing SQLite file is not created
    study = get_study(storage, study_name)
    trial = best_trial(study, trial_number)
    space, config = config_of_trial(study, trial)
    data = prepared_data(study, storage_url)
    stored = StudyRecord.from_study(study)
    epochs, seed = epochs_and_seed(trial, config)
    weights = stored.weights

    import_tensorflow_quietly()  # its start-up lines stay out of the terminal
    from blood_automl import trainer

    fitted = (
        twin_calibration(config, data, weights=weights, seed=seed, epochs=epochs)
        if calibrate
        else None
    )
    result = train_on_train_and_val(config, data, weights=weights, seed=seed, epochs=epochs)
    probs = trainer.predict(result.model, data.x_test)
    metrics = trainer.compute_metrics(data.y_test, probs, data.class_names)
    metrics["split"] = "test"
    model, calibrated = result.model, None
    if fitted is not None:
        model = with_temperature(result.model, fitted.temperature)
        calibrated = trainer.predict(model, data.x_test)
    metrics["calibration"] = calibration_metrics(fitted, probs, calibrated, data.y_test)
    if tta:
        metrics["tta"] = tta_metrics(model, data.x_test, data.y_test, data.class_names)
    provenance = provenance_of(
        study,
        storage_url,
        trial,
        space,
        config,
        data,
        seed=seed,
        epochs=epochs,
        temperature=fitted.temperature if fitted is not None else None,
    )
    report = classification_report_text(data.y_test, probs, data.class_names)
    export_model(
        out,
        model=model,
        config=provenance,
        metrics=metrics,
        report=report,
        history=result.history,
        class_names=data.class_names,
        overwrite=overwrite,
        protected=protected,
        data_summary=summarize(training_images(data)),
        test_images=np.asarray(data.x_test),
        test_labels=np.asarray(data.y_test),
        portable=portable,
    )
    record_refit(study, trial.number, metrics, out, str(provenance["created"]))
    trainer.release()
    return RefitResult(
        out=out,
        trial=trial.number,
        validation_value=float(trial.value or 0.0),
        test_metrics=metrics,
        seconds=result.seconds,
        calibration=metrics["calibration"],
    )
