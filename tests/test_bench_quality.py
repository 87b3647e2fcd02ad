"""The data and metric parts of bench/quality.py: fixed stratified split, subsample, scores."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


@pytest.fixture(scope="module")
def quality() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_quality", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _labels(per_class: int = 50, classes: int = 8) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def test_module_does_not_import_tensorflow() -> None:
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('q', {str(PATH)!r}); "
        "m = sys.modules['q'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_split_is_disjoint_complete_stratified_and_fixed(quality: ModuleType) -> None:
    labels = np.random.default_rng(1).permutation(_labels())
    train, val, test = quality.stratified_split(labels)
    joined = np.concatenate([train, val, test])
    assert sorted(joined.tolist()) == list(range(labels.size))
    assert (len(train), len(val), len(test)) == (256, 64, 80)
    for part, share in ((train, 0.64), (val, 0.16), (test, 0.20)):
        counts = np.bincount(labels[part], minlength=8)
        assert np.all(np.abs(counts - share * 50) <= 1)
    again = quality.stratified_split(labels)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))


def test_bench_split_plain_and_quick(quality: ModuleType) -> None:
    labels = _labels(per_class=120)
    images = np.arange(labels.size, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 2, 2, 3), np.uint8
    )
    out = quality.bench_split({"images": images, "labels": labels}, quick_images=160)
    sizes = [len(out[f"{s}_labels"]) for s in quality.SPLITS]
    assert sum(sizes) == 160 and sizes[2] == 32
    assert list(out["class_names"]) == [str(c) for c in range(8)]
    assert np.bincount(out["test_labels"], minlength=8).tolist() == [4] * 8
    full = quality.bench_split({"images": images, "labels": labels}, quick_images=None)
    assert sum(len(full[f"{s}_labels"]) for s in quality.SPLITS) == labels.size


def test_bench_split_keeps_a_medmnist_split(quality: ModuleType) -> None:
    source: dict[str, np.ndarray] = {}
    for s, n in zip(quality.SPLITS, (40, 16, 24), strict=True):
        source[f"{s}_images"] = np.zeros((n, 2, 2, 3), np.uint8)
        source[f"{s}_labels"] = (np.arange(n) % 8).reshape(-1, 1)
    out = quality.bench_split(source, quick_images=None)
    assert [len(out[f"{s}_labels"]) for s in quality.SPLITS] == [40, 16, 24]
    assert out["train_labels"].ndim == 1
    assert np.array_equal(out["val_labels"], np.arange(16) % 8)


def test_metrics(quality: ModuleType) -> None:
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1]
    m = quality.metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["macro_f1"] == pytest.approx((2 * 4 / (2 * 4 + 1) + 2 / 3) / 2)


def test_differences_and_check(quality: ModuleType) -> None:
    def res(tool: str, seed: int, acc: float | None) -> object:
        scores = (
            {} if acc is None else dict.fromkeys(("accuracy", "balanced_accuracy", "macro_f1"), acc)
        )
        return quality.Result(tool, seed, scores=scores)

    ahead = [res("blood-automl", 0, 0.9), res("KerasTuner", 0, 0.8)]
    diff = quality.differences(ahead)
    assert diff["per_seed"]["0"]["accuracy"] == pytest.approx(0.1)
    assert diff["mean"]["macro_f1"] == pytest.approx(0.1)
    assert not quality.behind(diff)
    mixed = [*ahead, res("blood-automl", 1, 0.7), res("KerasTuner", 1, 0.8)]
    diff = quality.differences(mixed)
    assert diff["mean"]["accuracy"] == pytest.approx(0.0)
    assert quality.behind(diff)
    missing = quality.differences([res("blood-automl", 0, None), res("KerasTuner", 0, 0.8)])
    assert missing["mean"]["accuracy"] is None and quality.behind(missing)
