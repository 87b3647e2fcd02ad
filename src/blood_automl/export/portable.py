"""Portable exports: the model as LiteRT (model.tflite) and ONNX (model.onnx), checked against Keras.

Both files keep the exported model's contract: one input named ``image``, raw RGB pixels
as float32 (N, S, S, 3) with any N, class probabilities (N, C) out. Each file is written,
then run with its own runtime (LiteRT's ``Interpreter``, onnxruntime on the CPU) on the
test images and compared with the Keras model: the share of images whose top class agrees
and the largest absolute difference of a probability go to metrics.json's ``portable``.

A file whose top class agrees on fewer than :data:`MIN_AGREEMENT` of the images, whose
conversion fails, or whose packages are not installed is not kept: the Keras files are the
reference and stay, the export succeeds, and ``portable[<format>]`` says why the file is
missing (``status`` and ``warning``, one line the command prints). A file that would give
other answers than the model it claims to be is never shipped.

:class:`Runner` is what predict, evaluate and test-time augmentation score images with:
``predict_on_batch(images) -> probabilities`` for a Keras model, an ONNX file or a LiteRT
file alike. TensorFlow, tf2onnx, onnxruntime and LiteRT are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from blood_automl.errors import ConfigError, DataError

LITERT_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
INPUT_NAME = "image"
ONNX_OPSET = 17
MIN_AGREEMENT = 0.99
"""The least share of images whose top class a portable file must give as the Keras model does."""
INSTALL_FIX = 'pip install "blood-automl[export]"'
CHECK_BATCH = 64
RANDOM_CHECK_IMAGES = 32
"""Images of random pixels the files are checked on when no test images are given."""
PORTABLE_SUFFIXES = (".tflite", ".onnx")


class Runner(Protocol):
    """A model that scores raw RGB pixels: (N, S, S, 3) float32 in, (N, C) probabilities out."""

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray: ...


# -- running each format ------------------------------------------------------------------


class KerasRunner:
    """A Keras model as a :class:`Runner`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.outputs = model.outputs

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.asarray(images, dtype=np.float32)))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict_on_batch(images)


class OnnxRunner:
    """An ONNX file run by onnxruntime on the CPU."""

    def __init__(self, path: Path) -> None:
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]
        self.input_shape: tuple[Any, ...] = tuple(self.input.shape)
        self.output_shape: tuple[Any, ...] = tuple(self.output.shape)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        feed = {self.input.name: np.ascontiguousarray(images, dtype=np.float32)}
        return np.asarray(self.session.run([self.output.name], feed)[0])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict_on_batch(images)


class LiteRTRunner:
    """A LiteRT (.tflite) file run by LiteRT's interpreter; the batch size follows the images."""

    def __init__(self, path: Path) -> None:
        interpreter = importlib.import_module("ai_edge_litert.interpreter")
        self.interpreter = interpreter.Interpreter(model_path=str(path))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape_signature"])
        self.output_shape = tuple(int(d) for d in self.output["shape_signature"])
        self._allocated: tuple[int, ...] | None = None

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)
        if self._allocated == batch.shape:
            return self._invoke(batch)
        with _silenced():  # the first run announces its CPU delegate on stderr
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._allocated = batch.shape
            return self._invoke(batch)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict_on_batch(images)


def predict_all(runner: Runner, images: np.ndarray, batch_size: int = CHECK_BATCH) -> np.ndarray:
    """The runner's probabilities (N, C) float32 for all ``images``, ``batch_size`` at a time."""
    parts = [
        np.asarray(runner.predict_on_batch(images[i : i + batch_size].astype(np.float32)))
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


# -- the formats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """One portable format: its file, the modules writing and running it needs, how to do both."""

    key: str
    file: str
    label: str
    writes_with: tuple[str, ...]
    runs_with: str
    write: Callable[[Any, Path], None]
    open: Callable[[Path], Runner]


def _signature(model: Any) -> Any:
    import tensorflow as tf

    size = tuple(model.inputs[0].shape[1:])
    return tf.TensorSpec((None, *size), tf.float32, name=INPUT_NAME)


def _write_onnx(model: Any, path: Path) -> None:
    import logging

    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    function = tf.function(lambda images: model(images, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=(_signature(model),), opset=ONNX_OPSET, output_path=str(path)
    )


def _write_litert(model: Any, path: Path) -> None:
    model.export(str(path), format="litert", verbose=False, input_signature=[_signature(model)])


FORMATS: tuple[Format, ...] = (
    Format(
        "onnx",
        ONNX_FILE,
        "ONNX",
        ("tf2onnx", "onnx", "onnxruntime"),
        "onnxruntime",
        _write_onnx,
        OnnxRunner,
    ),
    Format(
        "litert",
        LITERT_FILE,
        "LiteRT",
        ("ai_edge_litert",),
        "ai_edge_litert",
        _write_litert,
        LiteRTRunner,
    ),
)


def _missing(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported, or None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Send this process's stdout and stderr (descriptors 1 and 2 and Python's) to nowhere.

    The converters print progress and TensorFlow's C++ logging; a failure is reported by
    the error raised, which the caller records.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 1)
        os.dup2(sink, 2)
        with (
            open(os.devnull, "w") as null,
            contextlib.redirect_stdout(null),
            contextlib.redirect_stderr(null),
        ):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, sink):
            os.close(fd)


# -- writing and checking ------------------------------------------------------------------


def check_images(model: Any, test_images: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The images the files are checked on and what they are: the test split, or random pixels."""
    if test_images is not None and len(test_images):
        return np.asarray(test_images), "test split"
    size = tuple(int(d) for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (RANDOM_CHECK_IMAGES, *size)).astype(np.uint8), "random pixels"


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Top-1 agreement of ``probs`` with ``reference`` and their largest absolute difference."""
    if probs.shape != reference.shape:
        return {"agreement": 0.0, "max_abs_diff": float("inf")}
    same = float(np.mean(probs.argmax(axis=1) == reference.argmax(axis=1)))
    diff = np.abs(probs.astype(np.float64) - reference)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.isfinite(probs).all():
        same, worst = 0.0, float("inf")
    return {"agreement": same, "max_abs_diff": worst}


def write_portable(
    folder: Path,
    model: Any,
    test_images: np.ndarray | None = None,
    reference: Any = None,
) -> dict[str, Any]:
    """Write model.onnx and model.tflite into ``folder``, check each, and say how each went.

    ``reference`` is the model the files are compared with (``model`` itself unless given).
    Returns ``{"onnx": {...}, "litert": {...}}``: ``status`` ("ok", "disagrees", "failed"
    or "not installed"), the file and its size, conversion seconds, ``agreement`` and
    ``max_abs_diff`` on ``checked_on`` images, and a ``warning`` line where the file is
    missing. A file that does not pass is deleted.
    """
    images, source = check_images(model, test_images)
    expected = predict_all(KerasRunner(reference if reference is not None else model), images)
    return {
        fmt.key: _write_one(fmt, Path(folder), model, images, expected, source) for fmt in FORMATS
    }


def _write_one(
    fmt: Format,
    folder: Path,
    model: Any,
    images: np.ndarray,
    expected: np.ndarray,
    source: str,
) -> dict[str, Any]:
    missing = _missing((*fmt.writes_with, fmt.runs_with))
    if missing is not None:
        return {
            "status": "not installed",
            "file": None,
            "warning": f"{fmt.file} not written: the {fmt.label} export needs the Python "
            f"package '{missing}', which is not installed; {INSTALL_FIX} and refit again",
        }
    path = folder / fmt.file
    start = time.perf_counter()
    try:
        with _silenced():
            fmt.write(model, path)
            probs = predict_all(fmt.open(path), images)
    except Exception as e:  # a converter or runtime failure: the Keras files stay
        path.unlink(missing_ok=True)
        text = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        return {
            "status": "failed",
            "file": None,
            "error": text,
            "warning": f"{fmt.file} not written: the {fmt.label} conversion failed ({text[:120]}); "
            f"model.keras and the SavedModel are unaffected",
        }
    seconds = time.perf_counter() - start
    found = agreement(expected, probs)
    entry: dict[str, Any] = {
        "status": "ok",
        "file": fmt.file,
        "bytes": path.stat().st_size,
        "seconds": round(seconds, 3),
        "checked_on": {"images": int(images.shape[0]), "source": source},
        **found,
        "min_agreement": MIN_AGREEMENT,
    }
    if found["agreement"] < MIN_AGREEMENT:
        path.unlink()
        entry.update(
            status="disagrees",
            file=None,
            warning=f"{fmt.file} not kept: its top class agrees with model.keras on only "
            f"{found['agreement']:.2%} of {images.shape[0]} {source} images (at least "
            f"{MIN_AGREEMENT:.0%} needed); use model.keras or the SavedModel",
        )
    return entry


def portable_warnings(metrics: dict[str, Any]) -> list[str]:
    """The warning lines of metrics.json's ``portable`` (one per file not written)."""
    found = metrics.get("portable") or {}
    return [str(v["warning"]) for v in found.values() if isinstance(v, dict) and v.get("warning")]


# -- reading a portable file ---------------------------------------------------------------


def open_portable(path: Path, image_size: int, n_classes: int) -> Runner:
    """A runner for an exported model.onnx or model.tflite, checked against its config.json.

    Raises :class:`ConfigError` when the runtime is not installed and :class:`DataError`
    when the file cannot be loaded or its input or output do not fit the config.
    """
    fmt = next((f for f in FORMATS if f.file.endswith(path.suffix)), None)
    if fmt is None:
        raise DataError(f"{path} is not a {' or '.join(PORTABLE_SUFFIXES)} model file")
    if _missing((fmt.runs_with,)) is not None:
        raise ConfigError(
            f"running {path} needs the Python package '{fmt.runs_with}', which is not "
            f"installed; {INSTALL_FIX}, or give the model.keras beside it"
        )
    try:
        with _silenced():
            runner = fmt.open(path)
    except Exception as e:  # each runtime raises its own kinds for a file it cannot read
        text = " ".join(str(e).split())[:160]
        raise DataError(
            f"{path} cannot be loaded by {fmt.runs_with} as a {fmt.label} model "
            f"({type(e).__name__}: {text}); use the {fmt.file} exported by "
            f"`blood-automl refit-best`"
        ) from None
    _check_shapes(path, runner, image_size, n_classes)
    return runner


def _check_shapes(path: Path, runner: Any, image_size: int, n_classes: int) -> None:
    want = (image_size, image_size, 3)
    given = tuple(runner.input_shape)
    if len(given) != 4 or any(
        isinstance(d, int) and d > 0 and d != w for d, w in zip(given[1:], want, strict=True)
    ):
        raise DataError(
            f"{path} takes input {given}, but its config.json says {image_size}x{image_size} "
            f"RGB images; re-export the model with `blood-automl refit-best`"
        )
    out = tuple(runner.output_shape)
    if len(out) != 2 or out[-1] != n_classes:
        raise DataError(
            f"{path} outputs {out[-1] if out else None} values per image, but its config.json "
            f"names {n_classes} classes; re-export the model with refit-best"
        )
