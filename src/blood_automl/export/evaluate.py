"""evaluate: score an exported model on any labelled data set, with refit-best's metrics.

Writes ``metrics.json``, ``per_class.csv`` and ``confusion_matrix.png`` into a folder of
its own kind (marker ``.blood-automl-evaluation``), default ``evaluations/<export name>``.
The data is read as ``predict`` reads it (an .npz with labels, or a folder of class
folders); its classes must be the export's.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blood_automl.analysis.figures import confusion_matrix_png
from blood_automl.data.images import IMAGE_SUFFIXES
from blood_automl.data.readers import _array, _open_npz
from blood_automl.data.validate import fail, to_labels
from blood_automl.errors import ConfigError
from blood_automl.export.drift import shift_warning
from blood_automl.export.predict import (
    MODEL_SUFFIXES,
    _image_files,
    _predict,
    load_runner,
    read_export,
    read_images,
)
from blood_automl.export.refit import tta_metrics
from blood_automl.outputs import check_apart, check_output_dir, csv_cell, write_dir

EVALUATION_KIND = "evaluation"
DEFAULT_ROOT = Path("evaluations")
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "macro_f1")
_NEEDS_LABELS = (
    "give an .npz with 'labels' or a folder of class folders named as the model's classes"
)


@dataclass(frozen=True)
class EvaluationResult:
    """Where the evaluation went, its metrics (``tta`` inside with --tta) and a drift warning."""

    out: Path
    model: Path
    class_names: tuple[str, ...]
    metrics: dict[str, Any]
    notes: tuple[str, ...]
    warning: str | None


def default_out(export: str | Path) -> Path:
    """``evaluations/<export folder name>`` for an export folder or one of its model files."""
    path = Path(os.path.abspath(export))
    folder = path if path.is_dir() or path.suffix not in MODEL_SUFFIXES else path.parent
    return DEFAULT_ROOT / (folder.name or "export")


def evaluate_export(
    export: str | Path,
    data: str | Path,
    *,
    out: Path | None = None,
    tta: bool = False,
    batch_size: int = 256,
    overwrite: bool = False,
    resize: bool = False,
    convert: bool = False,
) -> EvaluationResult:
    """Score the export on labelled ``data`` and write the evaluation folder.

    ``out`` is checked first (a new or empty folder, or with ``overwrite`` an earlier
    evaluation; never the export or the data), then the export and the data are read;
    nothing is written when any of them is wrong. With ``tta`` the test-time augmented
    accuracy, balanced accuracy and macro F1 are added as ``metrics["tta"]``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a whole number >= 1, but got {batch_size!r}")
    target = Path(out) if out is not None else default_out(export)
    inputs = [Path(export), Path(data)]
    check_apart(target, inputs, "evaluate", default_out(Path(export)))
    check_output_dir(target, EVALUATION_KIND, overwrite=overwrite)
    exported = read_export(Path(export))
    check_classes(data, exported.class_names)
    found = read_images(
        data, exported.image_size, exported.class_names, resize=resize, convert=convert
    )
    if found.labels is None:
        raise fail(str(data), "has no labels, so there is nothing to score against", _NEEDS_LABELS)
    images = np.asarray(found.images)
    model = load_runner(exported)
    from blood_automl.trainer import compute_metrics

    probs = _predict(model, images, batch_size, exported)
    metrics = compute_metrics(found.labels, probs, exported.class_names)
    if tta:
        metrics["tta"] = tta_metrics(model, images, found.labels, exported.class_names)
    warning = shift_warning(exported.data_summary, images)
    metrics.update(
        model=str(exported.model_file),
        data=str(data),
        data_shift_warning=warning,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    names = exported.class_names
    write_dir(
        target,
        EVALUATION_KIND,
        lambda folder: _fill(
            folder, metrics, names, f"{exported.model_file.parent.name} on {data}"
        ),
        overwrite=overwrite,
    )
    return EvaluationResult(
        target, exported.model_file, names, metrics, tuple(found.notes), warning
    )


# -- checks --------------------------------------------------------------------------------


def check_classes(data: str | Path, model_names: tuple[str, ...]) -> None:
    """Refuse labelled data whose class names are not the model's (missing or extra ones)."""
    names = data_class_names(Path(data).expanduser(), model_names)
    if names is None or set(names) == set(model_names):
        return
    missing = [n for n in model_names if n not in names]
    extra = [n for n in names if n not in model_names]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(repr(n) for n in missing))
    if extra:
        parts.append("extra " + ", ".join(repr(n) for n in extra))
    raise fail(
        str(data),
        f"its classes are not the model's ({'; '.join(parts)})",
        f"name the classes (class folders or the npz's class_names) exactly as the model's "
        f"{len(model_names)}: {', '.join(model_names)}",
    )


def data_class_names(path: Path, model_names: tuple[str, ...]) -> tuple[str, ...] | None:
    """The classes the data names: its class folders, or its npz class names / string labels.

    None where the data does not name them (integer labels without class names: they
    index the model's classes) or cannot be read (the reader then says why).
    """
    if not path.exists() or path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    if path.is_dir():
        if _image_files(path):
            return None
        return (
            tuple(
                d.name
                for d in sorted(path.iterdir())
                if d.is_dir() and not d.name.startswith(".") and _image_files(d)
            )
            or None
        )
    with _open_npz(path) as npz:
        if "labels" not in npz.files:
            return None
        labels = _array(npz, "labels", path)
        names = _array(npz, "class_names", path) if "class_names" in npz.files else None
    if names is None and (labels.dtype.kind not in "US" or _digits(labels)):
        return None  # numbers: they index the model's classes
    _, found, _ = to_labels(labels, labels.reshape(-1).shape[0], str(path), class_names=names)
    return found


def _digits(labels: np.ndarray) -> bool:
    """Whether string labels are all whole numbers written in digits."""
    text = np.char.strip(labels.astype(str))
    return bool(np.all(np.char.isdigit(np.char.lstrip(text, "-"))))


# -- the folder ----------------------------------------------------------------------------


def per_class_table(metrics: dict[str, Any]) -> list[list[str]]:
    """Rows ``class, precision, recall, f1, support`` (a header first), numbers as text."""
    rows = [["class", "precision", "recall", "f1", "support"]]
    for name, m in metrics["per_class"].items():
        rows.append(
            [
                name,
                f"{m['precision']:.4f}",
                f"{m['recall']:.4f}",
                f"{m['f1']:.4f}",
                str(m["support"]),
            ]
        )
    return rows


def _fill(folder: Path, metrics: dict[str, Any], names: Sequence[str], title: str) -> None:
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with open(folder / "per_class.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for row in per_class_table(metrics):
            writer.writerow([csv_cell(cell) for cell in row])
    confusion_matrix_png(metrics["confusion_matrix"], names, folder / "confusion_matrix.png", title)
