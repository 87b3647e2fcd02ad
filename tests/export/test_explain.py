"""Grad-CAM: heat maps on a planted square, the feature-map finder, ensembles, the explain command."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blood_automl.export.explain_sheets import choose

SIZE = 32
SQUARE = 8
CLASSES = ["top_left", "bottom_right", "none"]
CORNERS = {0: (0, 0), 1: (SIZE - SQUARE, SIZE - SQUARE)}


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is only where a bright square sits: top left, bottom right, none.

    The square touches the image's border, so a network of convolutions and global pooling
    can tell where it is (from the zero padding beside it); images without a square make
    both square classes need evidence of their own.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 90, size=(n, SIZE, SIZE, 3))
    for i, label in enumerate(labels):
        if label in CORNERS:
            r, c = CORNERS[int(label)]
            images[i, r : r + SQUARE, c : c + SQUARE] = 255
    return images.astype(np.uint8), labels.astype(np.int64)


def region(label: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    r, c = CORNERS[label]
    mask[r : r + SQUARE, c : c + SQUARE] = True
    return mask


def tiny_net(seed: int = 0) -> Any:
    """Two convolutions, a 16x16 feature map, global pooling, ``logits`` and ``probabilities``."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(len(CLASSES), name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=f"tiny_{seed}")


@pytest.fixture(scope="module")
def trained() -> Any:
    """The tiny net trained on planted squares until it is right on held-out images."""
    import keras

    images, labels = squares(240, seed=1)
    model = tiny_net()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=12, batch_size=20, verbose=0)
    test, test_labels = squares(40, seed=2)
    accuracy = np.mean(model.predict(test.astype("float32"), verbose=0).argmax(1) == test_labels)
    assert accuracy >= 0.95, f"the tiny net did not learn the squares ({accuracy})"
    return model


def test_heat_lies_on_the_planted_square(trained: Any) -> None:
    from blood_automl.export.explain import find_target, gradcam

    assert find_target(trained).layer == "features"
    images, labels = squares(30, seed=3)
    result = gradcam(trained, images)
    assert result.maps.shape == (30, SIZE, SIZE)
    assert result.maps.min() >= 0.0 and result.maps.max() <= 1.0
    planted = [i for i, label in enumerate(labels) if label in CORNERS]
    good = 0
    for i in planted:
        heat, inside = result.maps[i], region(int(labels[i]))
        good += heat[inside].mean() > 2 * heat[~inside].mean()
    assert good >= 0.8 * len(planted), f"only {good} of {len(planted)} maps sit on the square"


def test_ensemble_gives_member_maps_and_their_mean(trained: Any) -> None:
    from blood_automl.export.ensemble import soft_vote
    from blood_automl.export.explain import describe, gradcam

    images, _ = squares(6, seed=5)
    second = tiny_net(seed=7)
    alone = [gradcam(m, images).member_maps[0] for m in (trained, second)]
    ensemble = soft_vote([trained, second])
    result = gradcam(ensemble, images)
    assert result.ensemble and result.member_maps.shape == (2, 6, SIZE, SIZE)
    assert "mean of the 2 ensemble members' maps" in describe(result)  # the sheets' titles
    assert np.allclose(result.maps, result.member_maps.mean(axis=0))
    ensemble_classes = ensemble.predict(images.astype("float32"), verbose=0).argmax(1)
    assert np.array_equal(result.classes, ensemble_classes)
    first_alone = gradcam(trained, images, classes=ensemble_classes).maps
    assert np.allclose(result.member_maps[0], first_alone, atol=1e-5)
    assert alone[0].shape == alone[1].shape == (6, SIZE, SIZE)


def test_a_model_without_logits_or_feature_map_is_refused() -> None:
    import keras

    from blood_automl.errors import DataError
    from blood_automl.export.explain import find_target

    flat = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(2, name="x")]
    )
    with pytest.raises(DataError, match="no 'logits' layer"):
        find_target(flat)
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(2, name="logits")(pooled)
    with pytest.raises(DataError, match="no convolutional feature map"):
        find_target(keras.Model(inputs, keras.layers.Softmax()(logits)))


def test_choose_takes_the_most_confident_right_then_wrong() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7], [0.7, 0.3]])
    chosen = choose(labels, probs, 1)
    assert chosen[0].tolist() == [0, 2]  # right: 0.9 beats 0.6; wrong: 0.8 beats 0.55
    assert chosen[1].tolist() == [4, 5]
    assert choose(labels, probs, 5)[0].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_the_finder_reaches_a_4d_map_in_every_registry_backbone() -> None:
    """Every backbone at its smallest size (1x1 at its end: the map is found inside it).

    Grad-CAM itself (whose split must give the model's own probabilities) runs on the
    smallest backbone of each family, to keep the test near a minute.
    """
    import keras

    from blood_automl.export.explain import find_target, gradcam
    from blood_automl.spaces.config import TrialConfig
    from blood_automl.spaces.registry import BACKBONES
    from blood_automl.trainer.model import build_model

    image = np.random.default_rng(0).integers(0, 256, (1, 96, 96, 3)).astype(np.uint8)
    smallest: dict[str, str] = {}
    for spec in sorted(BACKBONES.values(), key=lambda s: s.params):
        smallest.setdefault(spec.module, spec.name)
    for name, spec in BACKBONES.items():
        size = max(32, spec.min_size)
        model, _ = build_model(TrialConfig(backbone=name), 3, image_size=size, weights="none")
        target = find_target(model)
        height, width, channels = target.shape
        assert max(height, width) > 1 and channels > 3, (name, target)
        assert target.path[-1] == "backbone", (name, target)
        if name in smallest.values():
            result = gradcam(model, image[:, :size, :size])  # the split must match the model
            assert result.maps.shape == (1, size, size), name
        keras.backend.clear_session()


@pytest.mark.parametrize(
    ("size", "where", "side"),
    [(224, "se_excite", 7), (96, "backbone", 6), (64, "backbone", 8)],
    ids=["224px-the-head's-7x7-map", "96px-6x6-inside", "64px-8x8-inside"],
)
def test_the_split_matches_a_real_trainer_model_with_se_and_temperature(
    size: int, where: str, side: int
) -> None:
    """A trainer-built model (SE block, a temperature Rescaling) splits at a map of 6x6 or more.

    At 224 px the backbone's last map (7x7, through the SE block) is taken; at 96 and 64 px
    the backbone ends in 3x3 and 2x2, so the map is found inside it.
    """
    import keras

    from blood_automl.export.explain import find_target, gradcam
    from blood_automl.spaces.config import TrialConfig
    from blood_automl.trainer.model import build_model

    config = TrialConfig(backbone="MobileNet-0.25", se_block=True)
    model, _ = build_model(config, 3, image_size=size, weights="none")
    logits = model.get_layer("logits").output
    scaled = keras.layers.Rescaling(0.5, name="temperature")(logits)
    calibrated = keras.Model(model.inputs, keras.layers.Softmax(name="probabilities_t")(scaled))
    target = find_target(calibrated)
    found = target.layer if where == "se_excite" else target.path[-1]
    assert found == where and target.shape[:2] == (side, side), target
    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3)).astype(np.uint8)
    result = gradcam(calibrated, images)  # checks the split's probabilities against the model's
    assert result.maps.shape == (4, size, size)
    keras.backend.clear_session()


# -- the command ---------------------------------------------------------------------------


def _export(folder: Path, model: Any) -> Path:
    folder.mkdir()
    model.save(folder / "model.keras")
    config = {"class_names": CLASSES, "image_size": SIZE}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_explain_writes_sheets_csv_and_per_image_pngs(trained: Any, tmp_path: Path) -> None:
    _export(tmp_path / "export", trained)
    images, labels = squares(12, seed=6)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    argv = ["explain", "export", "data.npz", "--out", "why", "--per-class", "2", "--per-image"]
    result = _run(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "why"
    assert (out / ".blood-automl-explanation").is_file()
    assert {p.name for p in out.glob("sheet_*.png")} == {f"sheet_{c}.png" for c in CLASSES}
    with open(out / "explanations.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(12))
    assert [r["true"] for r in rows] == [CLASSES[label] for label in labels]
    assert all(r["correct"] == str(int(r["true"] == r["predicted"])) for r in rows)
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 12
    first = next(p for p in pngs if p.name.startswith("0_"))
    assert first.name == f"0_{CLASSES[labels[0]]}_{rows[0]['predicted']}.png"
    again = _run(*argv, cwd=tmp_path)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert _run(*argv, "--overwrite", cwd=tmp_path).returncode == 0
