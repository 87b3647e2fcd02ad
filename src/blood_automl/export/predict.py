"""Predict with an exported model: class and probabilities per image, written to a CSV."""

from __future__ import annotations

import csv
import json
import os
import reprlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from blood_automl.data.images import (
    IMAGE_SUFFIXES,
    ImageTally,
    image_notes,
    read_image_file,
    refuse_image_problems,
)
from blood_automl.data.readers import _array, _open_npz
from blood_automl.data.validate import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    fail,
    resize_one,
    to_labels,
    to_rgb_uint8,
)
from blood_automl.errors import ConfigError, DataError
from blood_automl.export.bundle import DATA_SUMMARY_FILE
from blood_automl.export.drift import read_summary, shift_warning
from blood_automl.export.portable import (
    PORTABLE_SUFFIXES,
    KerasRunner,
    Runner,
    open_portable,
    predict_all,
)
from blood_automl.export.tta import predict_tta
from blood_automl.outputs import check_output_file, csv_cell, write_file
from blood_automl.trainer.quiet import import_tensorflow_quietly

DEFAULT_OUT = Path("predictions.csv")
"""Where predictions go unless ``--out`` says otherwise (the working directory)."""

_MAKE_MODEL = (
    "give the model.keras, model.tflite or model.onnx (or their folder) exported by "
    "`blood-automl refit-best`"
)
MODEL_SUFFIXES = (".keras", *PORTABLE_SUFFIXES)


@dataclass(frozen=True, eq=False)
class ExportedModel:
    """What predict needs to know of an export: the model file and its config.json."""

    model_file: Path
    class_names: tuple[str, ...]
    image_size: int
    config: dict[str, Any]
    data_summary: dict[str, Any] | None = None  # the training images' statistics, if stored


@dataclass(frozen=True, eq=False)
class Images:
    """Images to predict on, where each came from, and their labels when the data had any."""

    images: np.ndarray | list[np.ndarray]  # (N, H, W, 3) uint8, or a list of (H, W, 3)
    sources: list[str]
    labels: np.ndarray | None
    notes: list[str]


@dataclass(frozen=True, eq=False)
class PredictResult:
    """What :func:`predict_images` wrote and found.

    ``probabilities`` is (N, classes) float32, ``predicted`` (N,) class indices, ``labels``
    the true classes when the data had them (then ``accuracy`` is their share predicted
    right), ``counts`` the number of images predicted per class.
    """

    out: Path
    model: Path
    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    probabilities: np.ndarray
    predicted: np.ndarray
    labels: np.ndarray | None
    accuracy: float | None
    counts: dict[str, int]
    notes: tuple[str, ...]
    warning: str | None = None  # the images differ from the training images (drift)

    def __len__(self) -> int:
        return int(self.predicted.shape[0])


def predict_images(
    model_path: str | Path,
    data: str | Path,
    *,
    out: Path | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    resize: bool = False,
    convert: bool = False,
    tta: bool = False,
) -> PredictResult:
    """Predict every image of ``data`` with an exported model and write a CSV.

    ``model_path`` is an export folder (its ``model.keras`` is used) or one of its model
    files, ``model.keras``, ``model.tflite`` or ``model.onnx``, with ``config.json`` beside
    it (``class_names``, ``image_size``). ``data`` is an .npz with ``images`` (and optional
    ``labels``, ``class_names``, ``filenames``), a folder of image files, a folder of class
    folders (the folder names are the true classes), or one image file. Images must have
    the model's size unless ``resize`` (centre-crop and Lanczos, as training data is
    resized); grayscale and RGBA images are refused unless ``convert``.

    The CSV (default ``predictions.csv``; checked before anything is loaded: an existing
    regular file is replaced only with ``overwrite``, anything else never; see
    :mod:`blood_automl.outputs`) has ``index, source, [true,] predicted, confidence,
    p_<class>...``; text cells that start like a formula get a leading ``'``.
    With ``tta`` the probabilities are the mean over the 8 dihedral views of each image
    (:mod:`blood_automl.export.tta`). ``warning`` says how the images differ from the
    model's training images when the export holds their statistics and they lie far away.
    Raises :class:`DataError` for a bad model or data, :class:`ConfigError` for bad options.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a whole number >= 1, but got {batch_size!r}")
    target = Path(out) if out is not None else DEFAULT_OUT
    check_output_file(target, overwrite=overwrite, inputs=_inputs(Path(model_path), data))
    exported = read_export(Path(model_path))
    found = read_images(
        data, exported.image_size, exported.class_names, resize=resize, convert=convert
    )
    model = load_runner(exported)
    probs = _predict(model, np.asarray(found.images), batch_size, exported, tta=tta)
    predicted = probs.argmax(axis=1)
    accuracy = None
    if found.labels is not None:
        accuracy = float(np.mean(predicted == found.labels))
    _write_csv(target, exported.class_names, found, probs, predicted, overwrite)
    counts = np.bincount(predicted, minlength=len(exported.class_names))
    return PredictResult(
        out=target,
        model=exported.model_file,
        class_names=exported.class_names,
        sources=tuple(found.sources),
        probabilities=probs,
        predicted=predicted,
        labels=found.labels,
        accuracy=accuracy,
        counts={n: int(c) for n, c in zip(exported.class_names, counts, strict=True)},
        notes=tuple(found.notes),
        warning=shift_warning(exported.data_summary, np.asarray(found.images)),
    )


# -- the model -----------------------------------------------------------------------------


def read_export(path: Path) -> ExportedModel:
    """Find the model file (a folder's model.keras) and read ``config.json`` beside it."""
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.exists():
        where = f"{path} holds no model.keras" if path.is_dir() else f"{path} does not exist"
        raise DataError(f"{where}; {_MAKE_MODEL}")
    if model_file.suffix not in MODEL_SUFFIXES:
        raise DataError(
            f"{model_file} is not a model file of refit-best (.keras, .tflite or .onnx); "
            f"{_MAKE_MODEL}"
        )
    if model_file.suffix == ".keras" and not zipfile.is_zipfile(model_file):
        raise DataError(
            f"{model_file} is not a Keras model (not a .keras zip archive); it must be a "
            f"model.keras exported by `blood-automl refit-best`"
        )
    config_file = model_file.parent / "config.json"
    if not config_file.is_file():
        raise DataError(
            f"{model_file.parent} has no config.json beside the model (it names the classes); "
            f"{_MAKE_MODEL} together with its folder"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{config_file} cannot be read as JSON ({type(e).__name__}: {e}); re-export the "
            f"model with `blood-automl refit-best`"
        ) from None
    if not isinstance(config, dict):
        raise DataError(f"{config_file} is not a JSON object; re-export with refit-best")
    names = config.get("class_names")
    if (
        not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise DataError(
            f"{config_file}: 'class_names' must list at least 2 distinct class names, but is "
            f"{_short(names)}; re-export the model with `blood-automl refit-best`"
        )
    size = config.get("image_size")
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE
    ):
        raise DataError(
            f"{config_file}: 'image_size' must be a whole number of pixels in "
            f"[{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], but is {_short(size)}; "
            f"re-export the model with `blood-automl refit-best`"
        )
    summary = read_summary(model_file.parent / DATA_SUMMARY_FILE)
    return ExportedModel(model_file, tuple(names), size, config, summary)


def _short(value: Any) -> str:
    """``repr(value)``, cut to a length an error line can carry."""
    short = reprlib.Repr()
    short.maxlist, short.maxdict, short.maxstring, short.maxother, short.maxlong = (
        10,
        10,
        60,
        60,
        40,
    )
    return short.repr(value)


def load_runner(exported: ExportedModel) -> Runner:
    """The exported model as a :class:`Runner`, whichever of its formats was given."""
    if exported.model_file.suffix in PORTABLE_SUFFIXES:
        return open_portable(exported.model_file, exported.image_size, len(exported.class_names))
    return KerasRunner(load_model(exported))


def load_model(exported: ExportedModel) -> Any:
    """Load the model in Keras safe mode and check its input and output against config.json."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import_tensorflow_quietly()  # its start-up lines stay out of the terminal
    import keras

    path = exported.model_file
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many kinds for files that are not its models
        text = " ".join(str(e).split())
        if "safe_mode" in text or "arbitrary code" in text:
            raise DataError(
                f"{path} holds Python code (e.g. a Lambda layer) that Keras safe mode refuses "
                f"to run; use a model.keras exported by `blood-automl refit-best`"
            ) from None
        raise DataError(
            f"{path} is not a Keras model that can be loaded ({type(e).__name__}: "
            f"{text[:160]}); it must be a model.keras exported by `blood-automl refit-best`"
        ) from None
    if not isinstance(model, keras.Model):
        raise DataError(f"{path} does not hold a Keras model; {_MAKE_MODEL}")
    want = (exported.image_size, exported.image_size, 3)
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if shape is None or any(d is not None and d != w for d, w in zip(shape, want, strict=True)):
        raise DataError(
            f"{path} takes input {shape}, but its config.json says {want[0]}x{want[1]} RGB "
            f"images; re-export the model with `blood-automl refit-best`"
        )
    n_out = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if n_out != len(exported.class_names):
        raise DataError(
            f"{path} outputs {n_out} values per image, but its config.json names "
            f"{len(exported.class_names)} classes; re-export the model with refit-best"
        )
    return model


def _predict(
    model: Runner,
    images: np.ndarray,
    batch_size: int,
    exported: ExportedModel,
    *,
    tta: bool = False,
) -> np.ndarray:
    if tta:
        probs = predict_tta(model, images, batch_size)
    else:
        probs = predict_all(model, images, batch_size)
    sums = probs.sum(axis=1)
    if not np.isfinite(probs).all() or (probs < 0).any() or np.abs(sums - 1.0).max() > 1e-2:
        raise DataError(
            f"{exported.model_file} does not output class probabilities (rows sum to "
            f"{float(sums.min()):.3g}..{float(sums.max()):.3g}, not 1); {_MAKE_MODEL}"
        )
    return probs


# -- the data ------------------------------------------------------------------------------


def read_images(
    data: str | Path,
    image_size: int,
    class_names: tuple[str, ...],
    *,
    resize: bool = False,
    convert: bool = False,
) -> Images:
    """Read ``data`` (npz, image folder, class folders or one image) as RGB uint8 images."""
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"{data}: no such file or folder; give an .npz with 'images', a folder of images, "
            f"a folder of class folders or one image file"
        )
    if path.is_dir():
        found = _read_folder(path, class_names, convert)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        found = _read_files([path], path.parent, str(path), convert)
    else:
        found = _read_npz(path, class_names, convert)
    return _sized(found, image_size, str(data), resize)


def _sized(found: Images, image_size: int, where: str, resize: bool) -> Images:
    wrong = [
        i
        for i, image in enumerate(found.images)
        if image.shape[0] != image_size or image.shape[1] != image_size
    ]
    if not wrong:
        images = found.images if isinstance(found.images, np.ndarray) else np.stack(found.images)
        return Images(images, found.sources, found.labels, found.notes)
    first = found.images[wrong[0]]
    if not resize:
        raise fail(
            where,
            f"{len(wrong)} image(s) are not {image_size}x{image_size} as the model expects "
            f"(e.g. {found.sources[wrong[0]]} is {first.shape[1]}x{first.shape[0]})",
            f"resize them to {image_size}x{image_size}, pass --resize to resize them as "
            f"training does (centre-crop, Lanczos), or use a model exported at that size",
        )
    images = np.stack([resize_one(image, image_size) for image in found.images])
    note = f"resized {len(wrong)} images (e.g. {first.shape[1]}x{first.shape[0]}) to {image_size}x{image_size}"
    return Images(images, found.sources, found.labels, [*found.notes, note])


def _read_npz(path: Path, class_names: tuple[str, ...], convert: bool) -> Images:
    where = str(path)
    with _open_npz(path) as npz:
        keys = set(npz.files)
        if "images" not in keys:
            raise fail(
                where,
                f"has no 'images' array (found: {', '.join(sorted(keys)[:8]) or 'nothing'})",
                "save np.savez(path, images=images[, labels=labels])",
            )
        raw = _array(npz, "images", path)
        raw_labels = _array(npz, "labels", path) if "labels" in keys else None
        raw_names = _array(npz, "class_names", path) if "class_names" in keys else None
        raw_files = _array(npz, "filenames", path) if "filenames" in keys else None
    images, notes = to_rgb_uint8(raw, where, convert=convert)
    n = images.shape[0]
    labels = None
    if raw_labels is not None:
        names = raw_names if raw_names is not None else np.array(class_names)
        labels, data_names, label_notes = to_labels(raw_labels, n, where, class_names=names)
        labels = _to_model_classes(labels, data_names, class_names, where)
        notes += label_notes
    if raw_files is not None and raw_files.ndim == 1 and raw_files.shape[0] == n:
        sources = [str(f) for f in raw_files.tolist()]
    else:
        sources = [f"{path.name}[{i}]" for i in range(n)]
    return Images(images, sources, labels, notes)


def _to_model_classes(
    labels: np.ndarray, data_names: tuple[str, ...], model_names: tuple[str, ...], where: str
) -> np.ndarray:
    """Renumber labels from the data's class names to the model's, refusing unknown classes."""
    if data_names == model_names:
        return labels
    lookup = {name: i for i, name in enumerate(model_names)}
    unknown = [n for n in data_names if n not in lookup]
    if unknown:
        raise fail(
            where,
            f"the data's class(es) {', '.join(repr(u) for u in unknown)} are not classes of the "
            f"model ({', '.join(model_names)})",
            "predict without labels, or rename the classes to the model's",
        )
    mapping = np.array([lookup[n] for n in data_names], dtype=np.int64)
    return mapping[labels]


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _read_folder(root: Path, class_names: tuple[str, ...], convert: bool) -> Images:
    files = _image_files(root)
    if files:
        return _read_files(files, root, str(root), convert)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [(d, _image_files(d)) for d in class_dirs]
    per_class = [(d, f) for d, f in per_class if f]
    if not per_class:
        raise fail(
            str(root),
            f"holds no image files ({', '.join(IMAGE_SUFFIXES)}) and no class folders of them",
            "give a folder of images, a folder of class folders, an .npz or one image",
        )
    unknown = [d.name for d, _ in per_class if d.name not in class_names]
    if unknown:
        raise fail(
            str(root),
            f"class folder(s) {', '.join(repr(u) for u in unknown[:5])} are not classes of the "
            f"model ({', '.join(class_names)})",
            "rename them to the model's classes, or put all images in one folder to predict "
            "without true classes",
        )
    all_files = [f for _, files in per_class for f in files]
    found = _read_files(all_files, root, str(root), convert)
    labels = np.concatenate(
        [np.full(len(files), class_names.index(d.name), dtype=np.int64) for d, files in per_class]
    )
    return Images(found.images, found.sources, labels, found.notes)


def _read_files(files: list[Path], root: Path, where: str, convert: bool) -> Images:
    """Decode image files with the data layer's decoder (16-bit and float scaled, modes checked)."""
    images: list[np.ndarray] = []
    sources: list[str] = []
    tally = ImageTally()
    for f in files:
        rel = f.relative_to(root).as_posix()
        array = read_image_file(f, rel, convert=convert, tally=tally)
        if array is not None:
            images.append(array)
            sources.append(rel)
    refuse_image_problems(where, tally, image_size=0)
    return Images(images, sources, None, image_notes(tally, 0, image_size=0))


# -- the output ----------------------------------------------------------------------------


def _inputs(model_path: Path, data: str | Path) -> list[Path]:
    """The files predict reads, which its output may never replace."""
    model_file = model_path / "model.keras" if model_path.is_dir() else model_path
    return [model_file, model_file.parent / "config.json", Path(data)]


def _write_csv(
    target: Path,
    class_names: tuple[str, ...],
    found: Images,
    probs: np.ndarray,
    predicted: np.ndarray,
    overwrite: bool,
) -> None:
    """Write the CSV beside ``target`` and move it there when complete (mode 0644).

    Text cells (sources, class names) that a spreadsheet would run as a formula get a
    leading ``'``.
    """
    header = ["index", "source"]
    if found.labels is not None:
        header.append("true")
    header += ["predicted", "confidence", *(f"p_{n}" for n in class_names)]
    names = [csv_cell(n) for n in class_names]

    def write(f: IO[Any]) -> None:
        writer = csv.writer(f)
        writer.writerow([csv_cell(h) for h in header])
        for i, (source, row, k) in enumerate(zip(found.sources, probs, predicted, strict=True)):
            line: list[Any] = [i, csv_cell(source)]
            if found.labels is not None:
                line.append(names[int(found.labels[i])])
            line += [names[int(k)], f"{row[k]:.6f}", *(f"{p:.6f}" for p in row)]
            writer.writerow(line)

    write_file(target, write, overwrite=overwrite)
