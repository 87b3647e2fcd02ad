"""Weights files: named as Keras names them for the image size, checked to load before a search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
keras = pytest.importorskip("keras")

from blood_automl.errors import WeightsFileError  # noqa: E402
from blood_automl.spaces.registry import get_backbone  # noqa: E402
from blood_automl.trainer import check_weights  # noqa: E402
from blood_automl.trainer.model import (  # noqa: E402
    build_backbone,
    unreadable_weights,
    weights_file,
)

SMOKE = get_backbone("MobileNet-0.25")


def test_file_names_follow_the_size_keras_loads() -> None:
    v2 = get_backbone("MobileNetV2")
    assert (
        weights_file(v2, 96) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    )
    assert weights_file(v2, 100) == v2.weights_file  # other sizes load the 224 px file
    assert weights_file(SMOKE, 96) == "mobilenet_2_5_224_tf_no_top.h5"  # MobileNet has no 96
    assert weights_file(SMOKE, 160) == "mobilenet_2_5_160_tf_no_top.h5"
    b0 = get_backbone("EfficientNetB0")
    assert weights_file(b0, 128) == b0.weights_file == "efficientnetb0_notop.h5"


def test_garbage_truncated_and_foreign_files_are_named_unreadable(
    tmp_path: Path, mobilenet_weights_path: Path
) -> None:
    good = mobilenet_weights_path.read_bytes()
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    (tmp_path / "half.h5").write_bytes(good[: len(good) // 2])
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["numbers"] = np.arange(4)
    assert unreadable_weights(mobilenet_weights_path) is None
    assert "signature" in str(unreadable_weights(tmp_path / "garbage.h5"))
    assert "truncated" in str(unreadable_weights(tmp_path / "half.h5"))
    assert "not Keras weights" in str(unreadable_weights(tmp_path / "foreign.h5"))


def test_a_folder_with_a_broken_file_is_reported_before_training(
    tmp_path: Path, mobilenet_weights_path: Path
) -> None:
    (tmp_path / SMOKE.weights_file).write_bytes(mobilenet_weights_path.read_bytes()[:5000])
    (problem,) = check_weights(["MobileNet-0.25"], tmp_path, image_size=96)
    assert problem.startswith(f"MobileNet-0.25: {tmp_path / SMOKE.weights_file} cannot be loaded")
    with pytest.raises(WeightsFileError, match=SMOKE.weights_file):
        build_backbone(SMOKE, 96, str(tmp_path))
    (tmp_path / SMOKE.weights_file).write_bytes(mobilenet_weights_path.read_bytes())
    assert check_weights(["MobileNet-0.25"], tmp_path, image_size=96) == []
    backbone = build_backbone(SMOKE, 96, str(tmp_path))
    assert backbone.count_params() == SMOKE.params
