"""A stand-in for ``blood_automl.trainer`` in search tests: no TensorFlow, no model, seconds per study.

It provides what the search path uses (``train``, ``release``, ``configure``,
``check_weights``, ``weights_mode``) with the real signatures. ``train`` sleeps
``$BLOOD_AUTOML_FAKE_SECONDS`` (default 0.05) per epoch, reports a value derived from the
seed after each of the config's ``head_epochs + finetune_epochs`` epochs, and returns the
real ``TrainResult`` (no model in it). Controlled by the environment:

``BLOOD_AUTOML_FAKE_SECONDS``      seconds per epoch
``BLOOD_AUTOML_FAKE_HANG_MARKER``  a file path: the first trial anywhere to finish epoch 1
                                   creates it (exclusively, holding its pid, seed and step)
                                   and then hangs until killed; every later trial runs on
``BLOOD_AUTOML_FAKE_LOG``          a file path: each ``train`` call appends one JSON line
                                   (pid, parent pid, seed, threads, a digest of its data)
``BLOOD_AUTOML_FAKE_RAISE``        ``OSError:ERRNO`` or a built-in exception name: every
                                   ``train`` call raises it after its first epoch
``BLOOD_AUTOML_FAKE_FAIL_MARKER``  a file path: the first trial anywhere to finish epoch 1
                                   creates it and raises RuntimeError; later trials run on
``BLOOD_AUTOML_FAKE_GROW_MIB``     MiB each ``train`` call leaves allocated (and touched)
                                   in its process, as TensorFlow leaves memory behind

``fake_tensorflow()`` is a ``tensorflow`` module that sees no GPU, for the code that asks.
``sitecustomize.py`` next to this file installs both in every process started with this
folder on ``PYTHONPATH`` and ``BLOOD_AUTOML_FAKE_TRAINER=1`` (CLI runs, spawned workers).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The real result types (their module imports no TensorFlow): what the search reads from a
# training is exactly what the trainer returns.
from blood_automl.trainer.results import TrainResult

SECONDS_ENV = "BLOOD_AUTOML_FAKE_SECONDS"
HANG_ENV = "BLOOD_AUTOML_FAKE_HANG_MARKER"
LOG_ENV = "BLOOD_AUTOML_FAKE_LOG"
RAISE_ENV = "BLOOD_AUTOML_FAKE_RAISE"
FAIL_ENV = "BLOOD_AUTOML_FAKE_FAIL_MARKER"
GROW_ENV = "BLOOD_AUTOML_FAKE_GROW_MIB"

FAKE = True  # lets a test check which trainer a process has

# The trainer's TensorFlow-free modules (``trainer.quiet``) are still the real ones.
__path__ = [str(Path(__file__).resolve().parents[3] / "src" / "blood_automl" / "trainer")]


@dataclass(frozen=True)
class RuntimeInfo:
    """What the real ``configure`` returns: no GPU here."""

    gpus: int
    mixed_precision: bool
    threads: int | None


_configured: RuntimeInfo | None = None


def configure(
    *, threads: int | None = None, mixed_precision: bool | None = None, memory_growth: bool = True
) -> RuntimeInfo:
    """Once per process, as the real one: record the thread cap, report no GPU."""
    global _configured
    if _configured is None:
        _configured = RuntimeInfo(gpus=0, mixed_precision=bool(mixed_precision), threads=threads)
    return _configured


def release() -> None:
    """Nothing to free."""


def weights_mode(weights: str | Path | None) -> str:
    """As the real one: ``imagenet``, ``none``, or a folder path."""
    if weights is None or str(weights).lower() == "none":
        return "none"
    if str(weights).lower() == "imagenet":
        return "imagenet"
    return str(Path(weights).expanduser())


def check_weights(
    backbones: Iterable[str], weights: str | Path | None, image_size: int = 96
) -> list[str]:
    """No missing weights for ``none`` or ``imagenet``; a folder must hold each backbone's file."""
    mode = weights_mode(weights)
    if mode in ("none", "imagenet"):
        return []
    from blood_automl.spaces.registry import get_backbone

    missing = []
    for name in dict.fromkeys(backbones):
        spec = get_backbone(name)
        if not (Path(mode) / spec.weights_file).is_file():
            missing.append(f"{spec.name}: {spec.weights_file} is not in {mode}")
    return missing


def visible_gpus() -> int:
    """The real one asks TensorFlow; here there is none."""
    return 0


def hide_gpus() -> None:
    """Nothing to hide without GPUs."""


def fake_tensorflow() -> types.ModuleType:
    """A ``tensorflow`` stand-in with what the search path asks it: no GPU to list or hide."""
    tf = types.ModuleType("tensorflow")
    tf.__dict__["FAKE"] = True
    tf.__dict__["config"] = types.SimpleNamespace(
        list_physical_devices=lambda device_type=None: [],
        set_visible_devices=lambda devices, device_type=None: None,
    )
    return tf


def value_at(seed: int, step: int, epochs: int) -> float:
    """The validation value after epoch ``step``: rises with the epochs, its level from the seed."""
    level = 0.3 + 0.6 * ((seed * 2654435761) % 1000) / 1000
    return round(level * (0.6 + 0.4 * step / max(1, epochs)), 6)


def data_digest(*arrays: Any) -> str:
    """A short sha256 of the arrays' shapes and bytes: which data a worker trained on."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            continue
        h.update(str(tuple(a.shape)).encode())
        h.update(memoryview(a.tobytes()))
    return h.hexdigest()[:16]


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:  # one short line per write: appends atomically
            f.write(json.dumps(entry) + "\n")


_kept: list[bytearray] = []  # what train() leaves behind with $BLOOD_AUTOML_FAKE_GROW_MIB


def _grow() -> None:
    """Keep ``$BLOOD_AUTOML_FAKE_GROW_MIB`` MiB allocated, every page written (resident)."""
    mib = float(os.environ.get(GROW_ENV, "0") or 0)
    if mib > 0:
        _kept.append(bytearray(b"\1" * int(mib * 2**20)))


def _hang_here(seed: int, step: int) -> bool:
    """True for the one trial that creates the hang marker (first come, any process)."""
    return _first_here(HANG_ENV, seed, step)


def _first_here(env: str, seed: int, step: int) -> bool:
    """True for the one trial that creates the marker file ``$env`` names (first come)."""
    path = os.environ.get(env)
    if not path:
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "seed": seed, "step": step}))
    return True


def _raise_if_asked() -> None:
    """Raise what ``$BLOOD_AUTOML_FAKE_RAISE`` names (a simulated disk or training fault)."""
    spec = os.environ.get(RAISE_ENV)
    if not spec:
        return
    name, _, code = spec.partition(":")
    if name == "OSError":
        number = int(code or errno.EIO)
        raise OSError(number, os.strerror(number), "fake-trainer-output")
    raise getattr(builtins, name)(f"simulated {name} in training")


def train(
    config: Any,
    x_train: Any,
    y_train: Any,
    class_names: Sequence[str],
    *,
    x_val: Any = None,
    y_val: Any = None,
    weights: str | None = "imagenet",
    objective: str = "accuracy",
    report: Callable[[int, float], None] | None = None,
    seed: int = 0,
    patience: int | None = 3,
    epochs: tuple[int, int] | None = None,
    every_epoch: bool = False,
    xla: bool = False,
    verbose: int = 0,
) -> TrainResult:
    """Pretend to train ``config``: sleep, report each epoch as the trainer does, return metrics."""
    from blood_automl.spaces.plan import epoch_plan

    started = time.monotonic()
    plan = epoch_plan(config, epochs=epochs, every_epoch=every_epoch)
    head, finetune = plan.head_epochs, plan.backbone_epochs
    total = head + finetune
    pause = float(os.environ.get(SECONDS_ENV, "0.05"))
    _log(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),  # the worker, where each trial trains in a process of its own
            "seed": seed,
            "threads": None if _configured is None else _configured.threads,
            "data": data_digest(x_train, y_train, x_val, y_val),
            "n_train": len(x_train),
            "weights": weights_mode(weights),
        }
    )
    history: list[dict[str, Any]] = []
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    best_value: float | None = None
    best_step = 0
    for step in range(1, total + 1):
        time.sleep(pause)
        value = value_at(seed, step, total)
        history.append(
            {
                "step": step,
                "phase": "head" if step <= head else "finetune",
                "loss": round(1.5 - value, 6),
                "accuracy": value,
                "val_loss": round(1.6 - value, 6) if has_val else None,
                "val_accuracy": value if has_val else None,
            }
        )
        if has_val:
            if best_value is None or value > best_value:
                best_value, best_step = value, step
            pruner_step = plan.pruner_step(step)
            if report is not None and pruner_step is not None:
                report(pruner_step, value)  # may raise optuna.TrialPruned
        if step == 1:
            _raise_if_asked()
            if _first_here(FAIL_ENV, seed, step):
                raise RuntimeError("simulated failure of this configuration")
        if plan.pruner_step(step) == 1 and _hang_here(seed, step):  # after its first report
            while True:  # until SIGKILL; a signal handler's exception ends it as in training
                time.sleep(3600)
    _grow()
    metrics = None
    if has_val:
        metrics = _metrics(best_value or 0.0, y_val, class_names)
    return TrainResult(
        model=None,
        history=history,
        best_step=best_step,
        best_value=best_value,
        val_metrics=metrics,
        head_epochs=head,
        finetune_epochs=finetune,
        unfreeze_from=None if finetune == 0 else "conv_pw_10",
        trainable_layers=0,
        seconds=time.monotonic() - started,
    )


def _metrics(value: float, y_val: Any, class_names: Sequence[str]) -> dict[str, Any]:
    n = len(class_names)
    counts = [int((y_val == c).sum()) for c in range(n)]
    matrix = [[counts[i] if i == j else 0 for j in range(n)] for i in range(n)]
    return {
        "accuracy": value,
        "balanced_accuracy": value,
        "macro_f1": value,
        "n": int(sum(counts)),
        "per_class": {
            name: {"precision": value, "recall": value, "f1": value, "support": counts[i]}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix,
    }
