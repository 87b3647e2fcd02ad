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
Throughput is the steady rate: the first WARMUP batches of each pass (building the iterator,
tracing the map function, filling the parallel map) are left out of the rate and their time
is printed as "start"; the stream is long enough to take about a second. Epochs are timed as
the trainer runs them: its own ``make_dataset`` pipeline, one iterator across the epochs of a
``fit``, the second epoch of each fit timed. Every figure is the median of --reps repetitions,
taken in turns (one rep of each pipeline, then the next round) so that load from other
processes hits all of them alike.
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
from blood_automl.trainer.fit import make_dataset  # noqa: E402

DATA = (
    Path(os.environ.get("BLOOD_AUTOML_SHARED", ROOT.parent / "shared"))
    / "data"
    / "pbc_96_small.npz"
)
BATCH = 64
WARMUP = 5  # batches left out of each throughput pass
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
    images: np.ndarray,
    labels: np.ndarray,
    fn: Callable[..., tuple[tf.Tensor, tf.Tensor]] | None,
    passes: int = 1,
) -> tf.data.Dataset:
    """Batches of (uint8 images, one-hot labels), mapped by fn in parallel, prefetched."""
    ds = tf.data.Dataset.from_tensor_slices((images, np.eye(NUM_CLASSES, dtype=np.float32)[labels]))
    ds = ds.repeat(passes).batch(BATCH)
    if fn is not None:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def one_pass(ds: tf.data.Dataset) -> tuple[float, float]:
    """(seconds to the first batch, images per second after the first WARMUP batches)."""
    stamps = [time.perf_counter()]
    images = []
    for x, _ in ds:
        stamps.append(time.perf_counter())
        images.append(int(x.shape[0]))
    if len(images) <= WARMUP + 1:
        raise ValueError(f"a pass needs more than {WARMUP + 1} batches, got {len(images)}")
    return stamps[1] - stamps[0], sum(images[WARMUP:]) / (stamps[-1] - stamps[WARMUP])


def throughput(
    runs: dict[str, tf.data.Dataset], reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Start-up seconds and steady images per second of each dataset: one pass to warm up,
    then reps passes, alternating between the datasets rep by rep so that load from other
    processes hits all alike."""
    for ds in runs.values():
        one_pass(ds)
    starts: dict[str, list[float]] = {name: [] for name in runs}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, ds in runs.items():
            start, rate = one_pass(ds)
            starts[name].append(start)
            rates[name].append(rate)
    return starts, rates


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


def epoch_clock(seconds: list[float]) -> object:
    """A Keras callback that appends the wall time of each epoch to ``seconds``."""
    import keras

    began: list[float] = []
    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: began.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - began[-1]),
    )


def epoch_times(
    model: object, datasets: dict[str, tf.data.Dataset], steps: int, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds of the first and of the second epoch of a two-epoch fit, per dataset, rep by rep
    in turns. The first epoch includes the iterator's start-up; the second is a steady epoch."""
    for ds in datasets.values():  # warm-up: tracing the train step and the map functions
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)  # type: ignore[attr-defined]
    first: dict[str, list[float]] = {name: [] for name in datasets}
    second: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(reps):
        for name, ds in datasets.items():
            seconds: list[float] = []
            model.fit(  # type: ignore[attr-defined]
                ds, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[epoch_clock(seconds)]
            )
            first[name].append(seconds[0])
            second[name].append(seconds[1])
    return first, second


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
    print(
        "(a) augmentation throughput in tf.data (batch -> map(parallel) -> prefetch; steady "
        f"images/s after {WARMUP} batches; start = seconds to the first batch)"
    )
    import keras
    import keras_cv

    def ours(params: AugmentParams) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
        return make_augmenter(params, NUM_CLASSES, seed=0)

    runs = {  # each pass about a second or more
        "no augmentation": pipeline(images, labels, None, passes=40),
        OURS: pipeline(images, labels, ours(BENCH), passes=8),
        "ours: 2 ops, 0.5, flips, 90-degree turns": pipeline(
            images, labels, ours(AugmentParams(2, 0.5, flip=True, rotate90=True)), passes=8
        ),
        "ours: strongest (3 ops, 1.0, flips, turns, cutmix)": pipeline(
            images, labels, ours(STRONGEST), passes=6
        ),
    }
    kcv = keras_cv.layers.RandAugment(
        value_range=(0, 255), augmentations_per_image=2, magnitude=0.5
    )
    runs[KERAS_CV] = pipeline(images, labels, lambda x, y: (kcv(x), y))
    if not skip_keras3:
        k3 = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
        n_k3 = BATCH * (WARMUP + 7)  # slow: a short pass
        runs["Keras 3 RandAugment (2 ops, factor 0.5)"] = pipeline(
            images[:n_k3], labels[:n_k3], lambda x, y: (k3(x), y)
        )
    starts, rates = throughput(runs, reps)
    for name, values in rates.items():
        print(f"  {name:52s} {fmt(values)}  start {statistics.median(starts[name]):6.3f} s")
    kcv_rate = statistics.median(rates[KERAS_CV])
    speedup = statistics.median(rates[OURS]) / kcv_rate
    print(f"  ratio ours / keras-cv: {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x)")
    for name, values in rates.items():
        if name != KERAS_CV:
            print(f"    {name:50s} {statistics.median(values) / kcv_rate:7.1f}x keras-cv")
    return speedup


def part_b(images: np.ndarray, labels: np.ndarray, reps: int) -> tuple[float, float]:
    """Frozen-backbone epochs with and without the strongest augmentation; returns the ratios."""
    print(
        "\n(b) frozen-backbone MobileNetV3Small, the trainer's pipeline (make_dataset), seconds "
        "per epoch: steady (second epoch of a fit) and first (with the iterator's start-up)"
    )
    model = build_model()
    steps = -(-len(images) // BATCH)

    def train(params: AugmentParams) -> tf.data.Dataset:
        aug = make_augmenter(params, NUM_CLASSES, seed=0)
        return make_dataset(
            images, labels, NUM_CLASSES, batch_size=BATCH, training=True, augment=aug, seed=0
        )

    datasets = {
        "no augmentation": train(AugmentParams()),
        "strongest, cutmix": train(STRONGEST),
        "strongest, mixup": train(AugmentParams(3, 1.0, True, True, "mixup", 1.0)),
    }
    first, times = epoch_times(model, datasets, steps, reps)
    base = statistics.median(times["no augmentation"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:20s} median {median:6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})"
            f"  {len(images) / median:6.0f} images/s  ratio {median / base:.3f}"
            f"  first epoch {statistics.median(first[name]):.2f} s"
        )
    ratio = statistics.median(times["strongest, cutmix"]) / base
    ratio_mixup = statistics.median(times["strongest, mixup"]) / base
    print(f"  ratio strongest (cutmix) / none: {ratio:.3f} (target <= {TARGET_EPOCH_RATIO})")
    print(f"  ratio strongest (mixup) / none:  {ratio_mixup:.3f} (target <= {TARGET_EPOCH_RATIO})")
    return ratio, ratio_mixup


if __name__ == "__main__":
    sys.exit(main())
