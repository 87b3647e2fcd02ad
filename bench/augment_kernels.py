"""Benchmark: the augmentation kernels one by one, and ``augment_batch`` per batch.

Run from the repository root:

    .venv/bin/python bench/augment_kernels.py

Each figure is the median of 200 calls on the same 64 real PBC images (96x96; synthetic when
the sample is absent), single thread, with the ratio to copying the batch (``np.copy``, the
floor for anything that writes every pixel) measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from augment import load_images  # noqa: E402
from blood_automl.trainer import augment as A  # noqa: E402
from blood_automl.trainer.augment import OPS, AugmentParams, augment_batch  # noqa: E402

N = 64
REPS = 200


def median_seconds(fn: Callable[[], object]) -> float:
    fn()  # compile (or load from the cache) first
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    images, _, source = load_images()
    batch = np.ascontiguousarray(images[:N])
    flat = batch.reshape(N, -1)
    labels = np.eye(8, dtype=np.float32)[np.arange(N) % 8]
    print(f"augmentation kernels, {N} images of {source}; medians of {REPS} calls")
    floor = median_seconds(lambda: np.copy(flat))
    print(f"  {'baseline: np.copy of the batch':40s} {floor / N * 1e6:7.2f} us/image")
    perm, no_box = np.arange(N), np.zeros((N, 4), np.int64)
    fold_x, fold_y = A._fold(96, 1), A._fold(96, 96)

    def remap(row: list[float]) -> Callable[[], object]:
        geometry = np.tile(np.array(row, np.float64), (N, 1))
        return lambda: A._remap_stage(flat, 96, 96, geometry, perm, no_box, fold_x, fold_y)

    def pixel(op: str) -> Callable[[], object]:
        strength = np.zeros((N, len(OPS)))
        strength[:, OPS.index(op)] = 0.5
        return lambda: A._pixel_stage(flat, 96, 96, strength)

    cases = {
        "remap: rotate 17 degrees (fixed point)": remap(
            [0.96, -0.29, 0.29, 0.96, 10.5, -5.5, 0, 0, 0, 0]
        ),
        "remap: flip (separable tables)": remap([-1.0, 0, 0, 1.0, 95.5, 0.5, 0, 0, 0, 0]),
        "MixUp": lambda: A._mixup_stage(flat, perm[::-1].copy(), np.full(N, 0.3)),
    }
    for op in ("brightness", "contrast", "autocontrast", "saturation", "sharpness", "posterize"):
        cases[f"pixel: {op}"] = pixel(op)
    for name, fn in cases.items():
        t = median_seconds(fn)
        print(f"  {name:40s} {t / N * 1e6:7.2f} us/image  {t / floor:6.1f}x np.copy")
    print("per batch of 64 (augment_batch, NumPy in and out):")
    for name, params in {
        "2 ops, magnitude 0.5": AugmentParams(2, 0.5),
        "2 ops, 0.5, flips, turns": AugmentParams(2, 0.5, flip=True, rotate90=True),
        "strongest, CutMix": AugmentParams(3, 1.0, True, True, "cutmix", 1.0),
        "strongest, MixUp": AugmentParams(3, 1.0, True, True, "mixup", 1.0),
    }.items():
        seeds = iter(range(10**9))  # a new draw each call
        t = median_seconds(lambda p=params, s=seeds: augment_batch(batch, labels, p, (1, next(s))))
        print(f"  {name:40s} {t * 1e3:7.3f} ms/batch  {t / floor:6.1f}x np.copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
