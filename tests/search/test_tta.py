"""Test-time augmentation: the 8 dihedral views, their average, and its use in predict and refit-best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blood_automl.export.predict import predict_images
from blood_automl.export.tta import INVERSES, N_VIEWS, TRANSFORMS, VIEWS, predict_tta
from conftest import make_images
from search.conftest import run_cli


def _explicit_views(images: np.ndarray) -> list[np.ndarray]:
    """The dihedral group written out by hand: 4 rotations, and 4 rotations of the mirror image."""
    mirrored = np.flip(images, axis=2)
    return [np.rot90(images, k, axes=(1, 2)) for k in range(4)] + [
        np.rot90(mirrored, k, axes=(1, 2)) for k in range(4)
    ]


def _asymmetric(n: int = 2, size: int = 5) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)


def test_the_eight_views_are_the_dihedral_group_distinct_and_invertible() -> None:
    images = _asymmetric()
    views = [t(images) for t in TRANSFORMS]
    assert len(views) == N_VIEWS == 8 and VIEWS[0] == (0, False)
    np.testing.assert_array_equal(views[0], images)  # the first is the identity
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.array_equal(views[i], views[j]), (VIEWS[i], VIEWS[j])
    explicit = _explicit_views(images)
    for view in views:
        assert sum(np.array_equal(view, e) for e in explicit) == 1
    for transform, inverse in zip(TRANSFORMS, INVERSES, strict=True):
        np.testing.assert_array_equal(inverse(transform(images)), images)
        assert transform(images).shape == images.shape


class _CornerModel:
    """A model that looks at one corner pixel only, so every view scores differently."""

    def __init__(self) -> None:
        self.calls = 0

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32
        self.calls += 1
        logits = x[:, 0, 0, :] / 50.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def test_tta_is_the_mean_of_the_model_over_the_eight_views() -> None:
    images = _asymmetric(n=5)
    model = _CornerModel()
    got = predict_tta(model, images, batch_size=2)
    plain = [model.predict_on_batch(v.astype(np.float32)) for v in _explicit_views(images)]
    model.calls = 0
    np.testing.assert_allclose(got, np.mean(plain, axis=0), rtol=1e-6)
    assert got.shape == (5, 3) and got.dtype == np.float32
    assert not np.allclose(plain[0], got)  # the views do change this model's output
    predict_tta(model, images, batch_size=2)
    assert model.calls == 3 * 8  # 3 batches of at most 2, each in 8 views


def _keras_model(path: Path, size: int, *, invariant: bool) -> None:
    """Raw pixels in, 8 class probabilities out; pooled (view-invariant) or flattened (not)."""
    import keras

    keras.utils.set_random_seed(0)
    pool = keras.layers.GlobalAveragePooling2D() if invariant else keras.layers.Flatten()
    model = keras.Sequential(
        [
            keras.Input(shape=(size, size, 3)),
            keras.layers.Rescaling(1.0 / 255.0),
            pool,
            keras.layers.Dense(8, activation="softmax"),
        ]
    )
    if invariant:
        kernel = np.zeros((3, 8), dtype="float32")
        kernel[0, 0] = kernel[1, 1] = kernel[2, 2] = 10.0
        model.layers[-1].set_weights([kernel, np.zeros(8, dtype="float32")])
    model.save(path)


def _export(folder: Path, size: int, *, invariant: bool) -> Path:
    from blood_automl.data import PBC_CLASS_NAMES

    folder.mkdir(parents=True)
    _keras_model(folder / "model.keras", size, invariant=invariant)
    config = {"class_names": list(PBC_CLASS_NAMES), "image_size": size}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_tta_of_a_view_invariant_model_is_its_plain_output(tmp_path: Path) -> None:
    import keras

    _keras_model(tmp_path / "m.keras", 16, invariant=True)
    model = keras.saving.load_model(tmp_path / "m.keras")
    images, _ = make_images(6, size=16)
    plain = np.asarray(model.predict_on_batch(images.astype(np.float32)))
    np.testing.assert_allclose(predict_tta(model, images, batch_size=4), plain, atol=1e-6)


def test_predict_with_tta_writes_the_averaged_probabilities(tmp_path: Path) -> None:
    import keras

    export = _export(tmp_path / "export", 16, invariant=False)
    images, labels = make_images(6, size=16)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    plain = predict_images(export, tmp_path / "d.npz", out=tmp_path / "plain.csv")
    tta = predict_images(export, tmp_path / "d.npz", out=tmp_path / "tta.csv", tta=True)

    model = keras.saving.load_model(export / "model.keras")
    views = [
        np.asarray(model.predict_on_batch(v.astype(np.float32))) for v in _explicit_views(images)
    ]
    np.testing.assert_allclose(tta.probabilities, np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_allclose(plain.probabilities, views[0], atol=1e-6)
    assert not np.allclose(plain.probabilities, tta.probabilities, atol=1e-4)
    written = np.loadtxt(tmp_path / "tta.csv", delimiter=",", skiprows=1, usecols=range(5, 13))
    np.testing.assert_allclose(written, tta.probabilities, atol=1e-6)


def test_refit_tta_metrics_score_the_averaged_probabilities(tmp_path: Path) -> None:
    import keras

    from blood_automl.data import PBC_CLASS_NAMES
    from blood_automl.export.refit import tta_metrics
    from blood_automl.trainer import compute_metrics

    _keras_model(tmp_path / "m.keras", 16, invariant=False)
    model = keras.saving.load_model(tmp_path / "m.keras")
    images, labels = make_images(40, size=16, seed=4)
    views = [
        np.asarray(model.predict_on_batch(v.astype(np.float32))) for v in _explicit_views(images)
    ]
    expected = compute_metrics(labels, np.mean(views, axis=0), PBC_CLASS_NAMES)
    got = tta_metrics(model, images, labels, PBC_CLASS_NAMES)
    assert got == {k: expected[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}


@pytest.mark.slow
def test_refit_best_with_tta_reports_both_and_stores_the_data_summary(tmp_path: Path) -> None:
    """A real one-trial smoke search, then ``refit-best --tta``: both scores, data_summary.json."""

    images, labels = make_images(96, size=96, seed=1)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = ["search", "--data", "train.npz", "--study", "t", "--storage", url, "--workers", "1"]
    search += ["--preset", "smoke", "--weights", "none", "--trials", "1", "--no-recipes"]
    done = run_cli(*search, "--no-clean", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    refit = run_cli("refit-best", "--study", "t", "--storage", url, "--tta", cwd=tmp_path)
    assert refit.returncode == 0, refit.stderr[-3000:]
    line = next(x for x in refit.stdout.splitlines() if x.startswith("trial "))
    assert "test accuracy" in line and "with test-time augmentation accuracy" in line
    export = tmp_path / "exports" / "t"
    metrics = json.loads((export / "metrics.json").read_text())
    assert set(metrics["tta"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    assert all(0.0 <= v <= 1.0 for v in metrics["tta"].values())
    assert f"{metrics['tta']['accuracy']:.4f}" in line.split("augmentation")[1]
    summary = json.loads((export / "data_summary.json").read_text())
    config = json.loads((export / "config.json").read_text())
    trained = config["trained_on"]["train"] + config["trained_on"]["validation"]
    assert summary["images"] == trained
    assert (export / "gradcam.png").read_bytes().startswith(b"\x89PNG")

    # predict on the training file itself: same distribution, so no warning
    predicted = run_cli("predict", str(export), "train.npz", "--tta", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "warning:" not in predicted.stderr
