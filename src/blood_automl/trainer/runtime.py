"""TensorFlow process setup: quiet logs, GPU memory growth, mixed precision, threads, seeds, cleanup."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import warnings
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import tensorflow as tf


@dataclass(frozen=True)
class RuntimeInfo:
    """What :func:`configure` found and set."""

    gpus: int
    mixed_precision: bool
    threads: int | None


_configured: RuntimeInfo | None = None


def configure(
    *,
    threads: int | None = None,
    mixed_precision: bool | None = None,
    memory_growth: bool = True,
) -> RuntimeInfo:
    """Set up TensorFlow once per process and return what was set.

    ``mixed_precision=None`` turns float16 compute on exactly when a GPU is visible (the
    model's output layer stays float32). ``threads`` caps TensorFlow's intra-op threads,
    for several workers sharing one CPU. GPU memory grows on demand, so one worker does
    not take a whole card at start-up.
    """
    global _configured
    if _configured is not None:
        return _configured
    quiet()
    gpus = tf.config.list_physical_devices("GPU")
    if memory_growth:
        for gpu in gpus:
            # RuntimeError: devices already initialised by the caller.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            pass
    use_mp = bool(gpus) if mixed_precision is None else mixed_precision
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mp else "float32")
    _configured = RuntimeInfo(gpus=len(gpus), mixed_precision=use_mp, threads=threads)
    return _configured


def quiet() -> None:
    """Silence TensorFlow's and Keras's informational logging and warnings."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras for one trial."""
    keras.utils.set_random_seed(int(seed))


def release() -> None:
    """Free the models and graphs of the last trial, so many trials in one process stay bounded."""
    keras.backend.clear_session(free_memory=True)
    gc.collect()


def visible_gpus() -> int:
    """How many GPUs TensorFlow sees (no GPU memory is taken to find out)."""
    return len(tf.config.list_physical_devices("GPU"))


def hide_gpus() -> None:
    """Keep this process off every GPU (a process that trains nothing); too late once one is used."""
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")
