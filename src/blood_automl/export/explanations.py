"""explain: Grad-CAM sheets of an exported model on labelled data, and the summary sheet of an export.

Writes ``sheet_<class>.png`` per true class (the most confident right and wrong
predictions, each image beside its heat map), ``explanations.csv`` (every image) and with
``per_image`` one PNG per image under ``images/``, into a folder of its own kind (marker
``.blood-automl-explanation``), default ``explanations/<export name>``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blood_automl.data.validate import fail
from blood_automl.errors import ConfigError, DataError
from blood_automl.export.evaluate import check_classes
from blood_automl.export.explain_sheets import Views, choose, pair_png, sheet_png
from blood_automl.export.predict import _predict, load_model, read_export, read_images
from blood_automl.outputs import check_apart, check_output_dir, csv_cell, write_dir

EXPLANATION_KIND = "explanation"
DEFAULT_ROOT = Path("explanations")
CSV_FILE = "explanations.csv"
IMAGES_DIR = "images"
MAX_PER_CLASS = 50
_NEEDS_LABELS = (
    "give an .npz with 'labels' or a folder of class folders named as the model's classes"
)


@dataclass(frozen=True)
class ExplanationResult:
    """Where the explanations went and what they hold."""

    out: Path
    model: Path
    images: int
    explained: int
    accuracy: float
    notes: tuple[str, ...]


def default_out(export: str | Path) -> Path:
    """``explanations/<export folder name>`` for an export folder or its model.keras."""
    path = Path(os.path.abspath(export))
    folder = path if path.is_dir() or path.suffix != ".keras" else path.parent
    return DEFAULT_ROOT / (folder.name or "export")


def check_options(per_class: int, batch_size: int) -> None:
    """Refuse option values before anything is read or imported."""
    if isinstance(per_class, bool) or not isinstance(per_class, int):
        raise ConfigError(f"--per-class must be a whole number, but got {per_class!r}")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise ConfigError(
            f"--per-class must be between 1 and {MAX_PER_CLASS} (images of each kind per "
            f"class), but got {per_class}; give e.g. --per-class 4"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a whole number >= 1, but got {batch_size!r}")


def explain_export(
    export: str | Path,
    data: str | Path,
    *,
    out: Path | None = None,
    per_class: int = 4,
    per_image: bool = False,
    batch_size: int = 32,
    overwrite: bool = False,
    resize: bool = False,
    convert: bool = False,
) -> ExplanationResult:
    """Explain the export's predictions on labelled ``data`` with Grad-CAM; write the folder.

    ``out`` is checked first (a new or empty folder, or with ``overwrite`` an earlier
    explanation; never the export or the data), then the export and the data are read as
    ``evaluate`` reads them; nothing is written when any of them is wrong. Per true class,
    the ``per_class`` most confident right and the ``per_class`` most confident wrong
    predictions are shown; with ``per_image`` every image gets its own PNG (its heat maps
    made a batch at a time while the folder is written, so memory stays flat).
    """
    check_options(per_class, batch_size)
    target = Path(out) if out is not None else default_out(export)
    inputs = [Path(export), Path(data)]
    check_apart(target, inputs, "explain", default_out(Path(export)))
    check_output_dir(target, EXPLANATION_KIND, overwrite=overwrite)
    exported = read_export(Path(export))
    if exported.model_file.suffix != ".keras":
        raise DataError(
            f"{exported.model_file} is a {exported.model_file.suffix} file, but Grad-CAM needs "
            "the Keras model's gradients; give the export folder or its model.keras"
        )
    check_classes(data, exported.class_names)
    found = read_images(
        data, exported.image_size, exported.class_names, resize=resize, convert=convert
    )
    if found.labels is None:
        raise fail(
            str(data), "has no labels, so nothing can be called right or wrong", _NEEDS_LABELS
        )
    images = np.asarray(found.images)
    labels = np.asarray(found.labels, dtype=np.int64)
    model = load_model(exported)
    probs = _predict(model, images, batch_size, exported)
    chosen = choose(labels, probs, per_class)
    shown = np.unique(np.concatenate(list(chosen.values())))
    from blood_automl.export.explain import describe, gradcam

    cams = gradcam(model, images[shown], classes=probs[shown].argmax(axis=1), batch_size=batch_size)
    rows = _rows(found.sources, labels, probs, exported.class_names)
    maps = {int(i): cams.maps[k] for k, i in enumerate(shown)}
    view = Views(images, labels, probs, exported.class_names, maps, describe(cams))

    def fill(folder: Path) -> None:
        _fill(folder, view, chosen, rows)
        if per_image:
            _per_image(folder / IMAGES_DIR, model, view, batch_size)

    write_dir(target, EXPLANATION_KIND, fill, overwrite=overwrite)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else 0.0
    return ExplanationResult(
        target,
        exported.model_file,
        len(labels),
        len(labels) if per_image else len(shown),
        accuracy,
        tuple(found.notes),
    )


def _rows(
    sources: Sequence[str], labels: np.ndarray, probs: np.ndarray, names: Sequence[str]
) -> list[list[Any]]:
    rows: list[list[Any]] = [["index", "file", "true", "predicted", "probability", "correct"]]
    for i, source in enumerate(sources):
        p = int(probs[i].argmax())
        rows.append(
            [i, source, names[labels[i]], names[p], f"{probs[i, p]:.4f}", int(p == labels[i])]
        )
    return rows


# -- the folder ------------------------------------------------------------------------------


def _fill(folder: Path, view: Views, chosen: dict[int, np.ndarray], rows: list[list[Any]]) -> None:
    with open(folder / CSV_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for row in rows:
            writer.writerow([csv_cell(cell) for cell in row])
    for c, idx in chosen.items():
        name = view.names[c]
        title = f"true class {name}: most confident right and wrong predictions ({view.method})"
        sheet_png(view, list(idx), folder / f"sheet_{_safe(name)}.png", title)


def _per_image(folder: Path, model: Any, view: Views, batch_size: int) -> None:
    """``<index>_<true>_<pred>.png`` for every image, its heat maps made a batch at a time."""
    from blood_automl.export.explain import gradcam_batches

    folder.mkdir()
    predicted = view.probs.argmax(axis=1)
    batches = gradcam_batches(model, view.images, classes=predicted, batch_size=batch_size)
    for start, cams in zip(range(0, len(view.labels), batch_size), batches, strict=True):
        for k, heat in enumerate(cams.maps):
            i = start + k
            true, pred = _safe(view.names[view.labels[i]]), _safe(view.names[predicted[i]])
            pair_png(view.images[i], heat, folder / f"{i}_{true}_{pred}.png")


def _safe(name: str) -> str:
    """A class name as a file name part: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "class"
