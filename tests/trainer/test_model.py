"""Tests of model building: every backbone builds, preprocessing matches Keras, unfreezing, weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from blood_automl.errors import ConfigError  # noqa: E402
from blood_automl.spaces.config import TrialConfig  # noqa: E402
from blood_automl.spaces.registry import BACKBONES, get_backbone  # noqa: E402
from blood_automl.trainer import (  # noqa: E402
    block_starts,
    build_model,
    check_weights,
    set_trainable,
    unfreeze_index,
)
from blood_automl.trainer.model import build_backbone, preprocessing_layers  # noqa: E402

from .conftest import same_arrays  # noqa: E402

HEAVY = {
    s.name for s in BACKBONES.values() if s.params > 15_000_000 or s.name.startswith("ConvNeXt")
}
LIGHT = sorted(set(BACKBONES) - HEAVY)


def _check_builds(name: str) -> None:
    spec = get_backbone(name)
    config = TrialConfig(backbone=name, dense_layers=2, dense_units=(64, 32), se_block=True)
    model, backbone = build_model(config, 8, image_size=96, weights="none")
    assert len(backbone.layers) == spec.layers
    assert backbone.count_params() == spec.params
    probs = model.predict(np.zeros((2, 96, 96, 3), np.float32), verbose=0)
    assert probs.shape == (2, 8)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    keras.backend.clear_session()


@pytest.mark.parametrize("name", LIGHT)
def test_every_light_backbone_builds_at_96(name: str) -> None:
    _check_builds(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_every_heavy_backbone_builds_at_96(name: str) -> None:
    _check_builds(name)


@pytest.mark.parametrize(
    "name", ["MobileNet-0.25", "ResNet50V2", "ResNet50", "VGG16", "DenseNet121", "InceptionV3"]
)
def test_in_model_preprocessing_matches_keras_preprocess_input(name: str) -> None:
    spec = get_backbone(name)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, spec.module).preprocess_input(x.copy())
    y = keras.ops.convert_to_tensor(x)
    for layer in preprocessing_layers(spec):
        y = layer(y)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), expected, rtol=1e-5, atol=1e-3)


def test_selu_head_uses_lecun_init_alpha_dropout_and_no_batch_norm() -> None:
    config = TrialConfig(
        backbone="MobileNet-0.25", activation="selu", head_batch_norm=True, dropout=0.2
    )
    model, _ = build_model(config, 8, weights="none")
    names = {type(layer).__name__ for layer in model.layers}
    assert "AlphaDropout" in names and "Dropout" not in names
    assert not any(layer.name.startswith("head_bn") for layer in model.layers)
    dense = model.get_layer("head_dense_0")
    assert type(dense.kernel_initializer).__name__ == "LecunNormal"


def test_head_widths_regularizers_and_float32_output() -> None:
    config = TrialConfig(
        backbone="MobileNet-0.25", dense_layers=3, dense_units=(128, 64, 32), l1=1e-5, l2=1e-4
    )
    model, _ = build_model(config, 5, weights="none")
    widths = [model.get_layer(f"head_dense_{i}").units for i in range(3)]
    assert widths == [128, 64, 32]
    reg = model.get_layer("head_dense_0").kernel_regularizer
    assert reg.l1 == pytest.approx(1e-5) and reg.l2 == pytest.approx(1e-4)
    assert model.output.dtype == "float32"
    assert model.output.shape[-1] == 5


def test_block_starts_never_cut_inside_a_residual_block() -> None:
    backbone = build_backbone(get_backbone("ResNet50V2"), 96, "none")
    names = [backbone.layers[i].name for i in block_starts(backbone)]
    # The stem (conv1, then pool1 which also opens conv2_block1, whose first weighted layer
    # it shares) and then every other pre-activation block at its preact batch norm.
    assert names[:2] == ["conv1_pad", "pool1_pad"], names
    assert all(n.endswith("_preact_bn") for n in names[2:]), names
    assert len(names) == 2 + (3 - 1) + 4 + 6 + 3


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.6, 1.0])
def test_unfreeze_trains_exactly_the_top_blocks_and_keeps_batch_norm_frozen(
    fraction: float,
) -> None:
    backbone = build_backbone(get_backbone("MobileNetV2"), 96, "none")
    n = len(backbone.layers)
    start = unfreeze_index(backbone, fraction)
    if fraction == 0:
        assert start == n
    else:
        assert start in block_starts(backbone)
        # Aligned to a block, the unfrozen share stays near the fraction asked for.
        assert abs((n - start) / (n - 1) - fraction) < 0.12
    count = set_trainable(backbone, start)
    for i, layer in enumerate(backbone.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (i >= start and not is_bn), layer.name
    assert count == sum(1 for layer in backbone.layers[start:] if layer.trainable and layer.weights)


def test_shared_imagenet_file_loads_into_mobilenet_and_matches_it(
    mobilenet_weights_path: Path, mobilenet_file_weights: dict[str, list[np.ndarray]]
) -> None:
    _, backbone = build_model(
        TrialConfig(backbone="MobileNet-0.25"), 8, weights=str(mobilenet_weights_path.parent)
    )
    total = sum(a.size for arrays in mobilenet_file_weights.values() for a in arrays)
    assert total == 218_544 == backbone.count_params()
    weighted = [layer for layer in backbone.layers if layer.weights]
    assert {layer.name for layer in weighted} == set(mobilenet_file_weights)
    for layer in weighted:
        assert same_arrays(mobilenet_file_weights[layer.name], layer.get_weights()), layer.name


def test_explicit_weights_dir_without_the_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mobilenet_2_5_224_tf_no_top\.h5"):
        build_model(TrialConfig(backbone="MobileNet-0.25"), 8, weights=str(tmp_path))
    missing = check_weights(["MobileNet-0.25", "MobileNetV3Small"], tmp_path)
    assert len(missing) == 2 and "weights_mobilenet_v3_small" in missing[1]
    assert check_weights(["MobileNet-0.25"], "none") == []


def test_offline_imagenet_check_uses_the_keras_cache(
    tmp_path: Path, mobilenet_weights_path: Path
) -> None:
    """With the file in $KERAS_HOME/models the check passes; without it (no network) it names the file."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / mobilenet_weights_path.name).write_bytes(
        mobilenet_weights_path.read_bytes()
    )
    code = (
        "from blood_automl.trainer import check_weights;"
        "print(repr(check_weights(['MobileNet-0.25', 'MobileNetV3Small'], 'imagenet')))"
    )
    env = dict(os.environ, KERAS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    # Any download attempt goes to a closed local port, so this holds with or without internet.
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    missing = eval(out.stdout.strip().splitlines()[-1])  # a repr of a list of str we printed
    assert len(missing) == 1
    assert missing[0].startswith(
        "MobileNetV3Small: weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    )
    assert str(tmp_path / "models") in missing[0]
