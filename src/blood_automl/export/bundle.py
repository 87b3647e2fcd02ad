"""Export of a refit model: model.keras, SavedModel, ONNX, LiteRT, JSON, card, report, figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blood_automl.analysis.figures import confusion_matrix_png, curves_png, reliability_png
from blood_automl.export.card import model_card
from blood_automl.export.explain_sheets import SUMMARY_FILE as GRADCAM_FILE
from blood_automl.export.explain_sheets import summary_sheet
from blood_automl.export.portable import write_portable
from blood_automl.outputs import write_dir

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
EXPORT_KIND = "export"
DATA_SUMMARY_FILE = "data_summary.json"
"""Colour and intensity statistics of the training images (:mod:`blood_automl.export.drift`)."""
MODEL_CARD_FILE = "MODEL_CARD.md"
RELIABILITY_FILE = "reliability_diagram.png"


def classification_report_text(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> str:
    """scikit-learn's per-class precision / recall / F1 report."""
    from sklearn.metrics import classification_report

    return str(
        classification_report(
            y_true,
            np.asarray(probs).argmax(axis=-1),
            labels=list(range(len(class_names))),
            target_names=list(class_names),
            digits=4,
            zero_division=0,
        )
    )


def export_model(
    out: Path,
    *,
    model: Any,
    config: dict[str, Any],
    metrics: dict[str, Any],
    report: str,
    history: list[dict[str, Any]],
    class_names: Sequence[str],
    overwrite: bool = False,
    saved_model: bool = True,
    protected: Sequence[Path] = (),
    data_summary: dict[str, Any] | None = None,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    portable: bool = True,
) -> Path:
    """Write everything refit-best promises into ``out`` (atomically) and return it.

    ``out`` follows the rules of :mod:`blood_automl.outputs`: a new or empty folder, or with
    ``overwrite`` an earlier export (marker ``.blood-automl-export``); never one of
    ``protected``. ``data_summary`` (the training images' statistics) goes to
    ``data_summary.json`` when given. ``test_images`` and ``test_labels`` (the test split,
    uint8 images as the model takes them) are what the figures and checks made from the
    exported model's own predictions use.

    With ``portable``, model.onnx and model.tflite are written too and checked against the
    model on ``test_images`` (:mod:`blood_automl.export.portable`); ``metrics`` gains
    ``portable`` (how each went, why a file is missing) before metrics.json is written.

    ``model.keras`` is an uncompiled copy of the model (no optimizer state, no custom
    objects), so it loads in Keras safe mode and predicts on raw uint8 images.
    """
    import keras

    def fill(folder: Path) -> None:
        inference = keras.Model(model.inputs, model.outputs, name=model.name)
        inference.save(folder / MODEL_FILE)
        if saved_model:
            inference.export(str(folder / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        if portable:
            metrics["portable"] = write_portable(folder, inference, test_images)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (folder / "classification_report.txt").write_text(report)
        if data_summary is not None:
            (folder / DATA_SUMMARY_FILE).write_text(json.dumps(data_summary, indent=2) + "\n")
        title, curves_title = figure_titles(config)
        confusion_matrix_png(
            metrics["confusion_matrix"],
            class_names,
            folder / "confusion_matrix.png",
            f"{title} (test split)",
        )
        curves_png(history, folder / "training_curves.png", curves_title)
        (folder / MODEL_CARD_FILE).write_text(model_card(config, metrics))
        if "calibration" in metrics:
            reliability_diagram(metrics["calibration"], folder / RELIABILITY_FILE, title)
        if test_images is not None and test_labels is not None:
            summary_sheet(
                inference, test_images, test_labels, class_names, folder / GRADCAM_FILE, title
            )

    return write_dir(out, EXPORT_KIND, fill, overwrite=overwrite, protected=protected)


def figure_titles(config: dict[str, Any]) -> tuple[str, str]:
    """The export figures' title, and the training curves' (an ensemble shows its first member's)."""
    study = f"study '{config.get('study')}'"
    members = config.get("members")
    if not isinstance(members, list) or not members:
        title = f"trial {config.get('trial')} of {study}"
        return title, f"{title}: refit on train + validation"
    trials = ", ".join(str(m.get("trial")) for m in members)
    return (
        f"ensemble of trials {trials} of {study}",
        f"ensemble member 0 (trial {members[0].get('trial')}) of {study}: refit on train + "
        "validation",
    )


def reliability_diagram(calibration: dict[str, Any], path: Path, title: str) -> Path:
    """The test split's reliability diagram before (and after) calibration, ECE in the legend."""
    curves = [
        (
            f"{'before' if 'test_reliability_after' in calibration else 'model'} "
            f"(ECE {calibration['test_ece_before']:.4f})",
            calibration["test_reliability_before"],
        )
    ]
    if "test_reliability_after" in calibration:
        label = (
            f"after, T = {calibration['temperature']:.3f} (ECE {calibration['test_ece_after']:.4f})"
        )
        curves.append((label, calibration["test_reliability_after"]))
    return reliability_png(curves, path, f"{title}: test split")
