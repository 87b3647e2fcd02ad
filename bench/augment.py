"""Benchmark: blood-automl's batched augmentation against keras-cv and Keras 3 RandAugment, and its cost in training.

Run from the repository root (needs the ``bench`` extra for keras-cv):

    .venv/bin/python bench/augment.py            # exits 1 when a target is missed
    .venv/bin/python bench/augment.py --no-check # only print

Targets, measured side by side in one run on 96x96 uint8 batches of 64:
(a) tf.data throughput of our augmenter (2 ops, magnitude 0.5) >= 20x keras-cv's RandAugment
    (augmentations_per_image=2, magnitude=0.5) in the same pipeline;
(b) one epoch of a frozen-backbone MobileNetV3Small under the strongest augmentation of the
    space (3 ops, magnitude 1, flips, 90-degree turns, CutMix) <= 1.15x the epoch without it
    (the same with MixUp instead of CutMix is printed too).
Every figure is the median of --reps repetitions, taken in turns (one rep of each pipeline,
then the next round) so that load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from blood_automl.trainer.augment import AugmentParams, make_augmenter  # noqa: E402

DATA = (
    Path(os.environ.get("BLOOD_AUTOML_SHARED", ROOT.parent / "shared"))
    / "data"
    / "pbc_96_small.npz"
)
BATCH = 64
NUM_CLASSES = 8
TARGET_SPEEDUP = 20.0
TARGET_EPOCH_RATIO = 1.15
STRONGEST = AugmentParams(3, 1.0, flip=True, rotate90=True, mix="cutmix", mix_alpha=1.0)
BENCH = AugmentParams(2, 0.5)
OURS = "ours: 2 ops, magnitude 0.5"
KERAS_CV = "keras-cv 0.9 RandAugment (2 ops, 0.5)"


def load_images() -> tuple[np.ndarray, np.ndarray, str]:
    """The real PBC sample when present, else synthetic blobs of the same shape."""
    if DATA.is_file():
        with np.load(DATA, allow_pickle=False) as f:
            return f["images"], f["labels"].astype(np.int64), f"real PBC images ({DATA})"
    rng = np.random.default_rng(0)
    labels = np.arange(2400) % NUM_CLASSES
    base = rng.integers(0, 256, size=(NUM_CLASSES, 1, 1, 3))
    noise = rng.integers(-40, 41, size=(2400, 96, 96, 3))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels, "synthetic images (real sample not found)"


def pipeline(
    images: np.ndarray, labels: np.ndarray, fn: Callable[..., tuple[tf.Tensor, tf.Tensor]] | None
) -> tf.data.Dataset:
    """Batches of (uint8 images, one-hot labels), mapped by fn in parallel, prefetched."""
    ds = tf.data.Dataset.from_tensor_slices((images, np.eye(NUM_CLASSES, dtype=np.float32)[labels]))
    ds = ds.batch(BATCH)
    if fn is not None:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def throughput(runs: dict[str, tuple[tf.data.Dataset, int]], reps: int) -> dict[str, list[float]]:
    """Images per second of iterating each dataset: once to warm up, then reps times,
    alternating between the datasets rep by rep so that load from other processes hits all alike."""
    for ds, _ in runs.values():
        for _ in ds:
            pass
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, (ds, n_images) in runs.items():
            start = time.perf_counter()
            for _ in ds:
                pass
            rates[name].append(n_images / (time.perf_counter() - start))
    return rates


def build_model() -> object:
    """MobileNetV3Small (weights=None) frozen by trainable=False on every layer, small head."""
    import keras

    backbone = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), include_top=False, weights=None, include_preprocessing=True
    )
    for layer in backbone.layers:  # batch norm frozen by trainable=False, not training=False
        layer.trainable = False
    inputs = keras.Input((96, 96, 3), dtype="uint8")
    x = backbone(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def epoch_times(
    model: object, datasets: dict[str, tf.data.Dataset], reps: int
) -> dict[str, list[float]]:
    """Seconds per model.fit epoch for each dataset, alternating between them rep by rep."""
    for ds in datasets.values():  # warm-up: tracing, the partial last batch
        model.fit(ds, epochs=1, verbose=0)  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(reps):
        for name, ds in datasets.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)  # type: ignore[attr-defined]
            times[name].append(time.perf_counter() - start)
    return times


def fmt(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):9.1f}  (" + ", ".join(f"{v:.0f}" for v in values) + ")"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-check", action="store_true", help="print only; never exit 1")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per figure (>= 5)")
    parser.add_argument(
        "--skip-keras3", action="store_true", help="leave out Keras 3's RandAugment"
    )
    parser.add_argument("--only", choices=["a", "b"], help="run only part (a) or (b)")
    args = parser.parse_args(argv)
    reps = max(5, args.reps)
    images, labels, source = load_images()
    print(f"blood-automl augmentation benchmark, {dt.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}"
    )
    print(f"load average at start: {os.getloadavg()}")
    print(f"data: {len(images)} {source}; batches of {BATCH}; medians of {reps} reps\n")

    speedup, ratio, ratio_mixup = float("inf"), 0.0, 0.0
    if args.only != "b":
        speedup = part_a(images, labels, reps, args.skip_keras3)
    if args.only != "a":
        ratio, ratio_mixup = part_b(images, labels, reps)
    print(f"\nload average at end: {os.getloadavg()}")
    missed = []
    if speedup < TARGET_SPEEDUP:
        missed.append(f"(a) {speedup:.1f}x < {TARGET_SPEEDUP:.0f}x")
    if max(ratio, ratio_mixup) > TARGET_EPOCH_RATIO:
        missed.append(f"(b) {max(ratio, ratio_mixup):.3f} > {TARGET_EPOCH_RATIO}")
    if missed:
        print("MISSED: " + "; ".join(missed))
        return 0 if args.no_check else 1
    print("all targets met")
    return 0


def part_a(images: np.ndarray, labels: np.ndarray, reps: int, skip_keras3: bool) -> float:
    """tf.data throughput, images per second; returns ours / keras-cv."""
    print("(a) augmentation throughput in tf.data (images/s; batch -> map(parallel) -> prefetch)")
    import keras
    import keras_cv

    n = len(images)
    runs = {"no augmentation": (pipeline(images, labels, None), n)}
    ours = make_augmenter(BENCH, NUM_CLASSES, seed=0)
    runs[OURS] = (pipeline(images, labels, ours), n)
    default = make_augmenter(AugmentParams(2, 0.5, flip=True, rotate90=True), NUM_CLASSES, seed=0)
    runs["ours: 2 ops, 0.5, flips, 90-degree turns"] = (pipeline(images, labels, default), n)
    strongest = make_augmenter(STRONGEST, NUM_CLASSES, seed=0)
    runs["ours: strongest (3 ops, 1.0, flips, turns, cutmix)"] = (
        pipeline(images, labels, strongest),
        n,
    )
    kcv = keras_cv.layers.RandAugment(
        value_range=(0, 255), augmentations_per_image=2, magnitude=0.5
    )
    n_kcv = 640  # fewer images for the slow ones, to keep the run short
    runs[KERAS_CV] = (pipeline(images[:n_kcv], labels[:n_kcv], lambda x, y: (kcv(x), y)), n_kcv)
    if not skip_keras3:
        k3 = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
        n_k3 = 192
        runs["Keras 3 RandAugment (2 ops, factor 0.5)"] = (
            pipeline(images[:n_k3], labels[:n_k3], lambda x, y: (k3(x), y)),
            n_k3,
        )
    rates = throughput(runs, reps)
    for name, values in rates.items():
        print(f"  {name:52s} {fmt(values)}")
    kcv_rate = statistics.median(rates[KERAS_CV])
    speedup = statistics.median(rates[OURS]) / kcv_rate
    print(f"  ratio ours / keras-cv: {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x)")
    for name, values in rates.items():
        if name != KERAS_CV:
            print(f"    {name:50s} {statistics.median(values) / kcv_rate:7.1f}x keras-cv")
    return speedup


def part_b(images: np.ndarray, labels: np.ndarray, reps: int) -> tuple[float, float]:
    """Frozen-backbone epochs with and without the strongest augmentation; returns the ratios."""
    strongest = make_augmenter(STRONGEST, NUM_CLASSES, seed=0)
    print("\n(b) frozen-backbone MobileNetV3Small, one model.fit epoch (seconds)")
    model = build_model()
    datasets = {
        "no augmentation": pipeline(images, labels, None),
        "strongest, cutmix": pipeline(images, labels, strongest),
        "strongest, mixup": pipeline(
            images,
            labels,
            make_augmenter(AugmentParams(3, 1.0, True, True, "mixup", 1.0), NUM_CLASSES, 0),
        ),
    }
    times = epoch_times(model, datasets, reps)
    base = statistics.median(times["no augmentation"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:20s} median {median:6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})"
            f"  {len(images) / median:6.0f} images/s  ratio {median / base:.3f}"
        )
    ratio = statistics.median(times["strongest, cutmix"]) / base
    ratio_mixup = statistics.median(times["strongest, mixup"]) / base
    print(f"  ratio strongest (cutmix) / none: {ratio:.3f} (target <= {TARGET_EPOCH_RATIO})")
    print(f"  ratio strongest (mixup) / none:  {ratio_mixup:.3f} (target <= {TARGET_EPOCH_RATIO})")
    return ratio, ratio_mixup


if __name__ == "__main__":
    sys.exit(main())
