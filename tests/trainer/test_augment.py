"""Tests of the batched augmenter: identity at 0, monotone, dtype kept, exact flips, mixing labels, seeds, tf.data."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from blood_automl.errors import ConfigError  # noqa: E402
from blood_automl.spaces.config import TrialConfig  # noqa: E402
from blood_automl.trainer import augment  # noqa: E402
from blood_automl.trainer.augment import OPS, AugmentParams, make_augmenter  # noqa: E402
from conftest import PBC_SMALL, make_images  # noqa: E402

STRONGEST = AugmentParams(3, 1.0, flip=True, rotate90=True, mix="cutmix", mix_alpha=1.0)
EVERYTHING = [
    AugmentParams(2, 0.5),
    AugmentParams(2, 0.5, flip=True, rotate90=True),
    STRONGEST,
    dataclasses.replace(STRONGEST, mix="mixup"),
    AugmentParams(len(OPS), 1.0),
    AugmentParams(mix="cutmix", mix_alpha=0.4),
]


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    """64 real PBC images (synthetic ones when the sample is absent) and one-hot labels."""
    if PBC_SMALL.is_file():
        with np.load(PBC_SMALL, allow_pickle=False) as f:
            images, labels = f["images"][::37][:64], f["labels"][::37][:64]
    else:
        images, labels = make_images(64, size=96)
    return images, np.eye(8, dtype=np.float32)[labels]


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("ops", [1, 2, 3, len(OPS)])
def test_identity_at_magnitude_zero(batch: tuple[np.ndarray, np.ndarray], ops: int) -> None:
    images, labels = batch
    out, out_labels = make_augmenter(AugmentParams(ops, 0.0), 8, seed=1)(images, labels)
    assert out.dtype == tf.uint8
    assert np.array_equal(out.numpy(), images)
    assert np.array_equal(out_labels.numpy(), labels)


def test_every_op_is_exact_identity_at_strength_zero(batch: tuple[np.ndarray, np.ndarray]) -> None:
    """Not only skipped at magnitude 0: each op's kernel, run at strength 0, is exact."""
    images = np.ascontiguousarray(batch[0])
    n, size = len(images), images[0].size
    flat = images.reshape(n, -1)
    strength = np.zeros(len(OPS))
    identity_map = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0.5])
    for op in ("autocontrast", "brightness", "contrast", "saturation", "hue"):
        strength[:] = 0.0
        strength[OPS.index(op)] = -0.0
        assert np.array_equal(augment._colour_map(strength, flat[0], 96, 96), identity_map)
    planes = np.empty((6, size // 3), np.float32)
    column = np.empty(size, np.int32)
    for image in flat[:8]:
        out = np.empty_like(image)
        augment._colour_matrix(image, out, identity_map.astype(np.float32), planes)
        assert np.array_equal(out, image)
        augment._scale(image, out, np.float32(1.0), np.float32(0.5))
        assert np.array_equal(out, image)
        augment._sharpen(image, out, column, 3 * 96, np.float32(0.0))
        assert np.array_equal(out, image)
        out[:] = image
        augment._bits(out, 0.0, -0.0)
        assert np.array_equal(out, image)
    u = np.random.default_rng(0).random((n, augment._N_DRAWS + 2 * len(OPS)))
    geometry = augment._geometry(np.zeros((n, len(OPS))), u, False, False, 96, 96)
    assert np.array_equal(geometry[:, :6], np.tile([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], (n, 1)))
    assert (geometry[:, 6] >= geometry[:, 7]).all()  # no cutout box
    assert not augment._moves(geometry, np.arange(n), np.zeros((n, 4), np.int64))


def run_ops(images: np.ndarray, strength: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The pixel and spatial stages on a batch, with the given strengths and draws."""
    n, h, w = images.shape[:3]
    flat = augment._pixel_stage(np.ascontiguousarray(images).reshape(n, -1), h, w, strength)
    geometry = augment._geometry(strength, u, False, False, h, w)
    out = augment._remap_stage(
        flat,
        h,
        w,
        geometry,
        np.arange(n),
        np.zeros((n, 4), np.int64),
        augment._fold(w, 1),
        augment._fold(h, w),
    )
    return out.reshape(images.shape)


def test_monotone_in_magnitude(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = batch
    changes = []
    for magnitude in (0.0, 0.25, 0.5, 0.75, 1.0):
        out, _ = make_augmenter(AugmentParams(2, magnitude), 8, seed=7)(images, labels)
        changes.append(mean_change(out.numpy(), images))
    assert changes[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(changes)), changes


@pytest.mark.parametrize("op", [name for name in OPS if name != "identity"])
def test_each_op_grows_with_strength(batch: tuple[np.ndarray, np.ndarray], op: str) -> None:
    images = batch[0][:16]
    u = np.full((16, augment._N_DRAWS + 2 * len(OPS)), 0.3)
    sign = np.where(np.arange(16) % 2 == 0, 1.0, -1.0)
    changes = []
    for m in (0.0, 0.5, 1.0):
        strength = np.zeros((16, len(OPS)))
        strength[:, OPS.index(op)] = sign * m
        changes.append(mean_change(run_ops(images, strength, u), images))
    assert changes[0] == 0.0 < changes[1] < changes[2], changes


def test_ops_match_their_definitions(batch: tuple[np.ndarray, np.ndarray]) -> None:
    """Brightness, posterize, solarize and cutout against their one-line definitions."""
    images = batch[0][:8]
    x = images.astype(np.float64)
    u = np.full((8, augment._N_DRAWS + 2 * len(OPS)), 0.5)
    for op, m, expected in (
        ("brightness", 1.0, np.clip(np.floor(x * 1.5 + 0.5), 0, 255)),
        ("brightness", -0.5, np.floor(x * 0.75 + 0.5)),
        ("posterize", 1.0, images & 0xF0),  # 8 - 4 bits kept
        ("posterize", 0.5, images & 0xFC),
        ("solarize", 1.0, np.where(images >= 128, 255 - images, images)),
        ("solarize", 0.25, np.where(images >= 224, 255 - images, images)),
    ):
        strength = np.zeros((8, len(OPS)))
        strength[:, OPS.index(op)] = m
        out = run_ops(images, strength, u).astype(np.float64)
        assert np.abs(out - expected).max() <= (1 if op == "brightness" else 0), (op, m)
    strength = np.zeros((8, len(OPS)))
    strength[:, OPS.index("cutout")] = 1.0  # a square of side 0.4 * 96 = 38 at the centre
    out = run_ops(images, strength, u)
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]].astype(np.float64).mean(axis=1)
    box = out[:, 48 - 19 : 48 + 19, 48 - 19 : 48 + 19]
    assert np.array_equal(box, np.broadcast_to(np.floor(corners + 0.5)[:, None, None], box.shape))
    outside = np.ones((96, 96), bool)
    outside[48 - 19 : 48 + 19, 48 - 19 : 48 + 19] = False
    assert np.array_equal(out[:, outside], images[:, outside])


@pytest.mark.parametrize("params", EVERYTHING, ids=str)
def test_dtype_shape_and_labels_kept(
    batch: tuple[np.ndarray, np.ndarray], params: AugmentParams
) -> None:
    images, labels = batch
    out, out_labels = make_augmenter(params, 8, seed=3)(images, labels)
    assert out.dtype == tf.uint8 and out.shape == images.shape
    assert out_labels.dtype == tf.float32 and out_labels.shape == labels.shape
    y = out_labels.numpy()
    assert (y >= 0).all() and (y <= 1).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    assert mean_change(out.numpy(), images) > 0


def test_flips_and_turns_are_exact_dihedral_maps(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = batch
    out, _ = make_augmenter(AugmentParams(flip=True, rotate90=True), 8, seed=5)(images, labels)
    seen = set()
    for original, moved in zip(images, out.numpy(), strict=True):
        variants = []
        for k in range(4):
            turned = np.rot90(original, k)
            variants += [turned, turned[:, ::-1], turned[::-1], turned[::-1, ::-1]]
        matches = [i for i, v in enumerate(variants) if np.array_equal(v, moved)]
        assert matches, "output is not a flip / 90-degree turn of its input"
        seen.add(matches[0] // 4 * 4 + matches[0] % 2)
    assert len(seen) > 2  # several different maps across the batch


def constant_batch(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n flat images of distinct values, image i of class i."""
    values = np.arange(n) * (250 // n) + 3
    images = np.broadcast_to(values[:, None, None, None], (n, 32, 32, 3)).astype(np.uint8)
    return images, np.eye(n, dtype=np.float32), values.astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_label_weights_are_the_pasted_areas(seed: int) -> None:
    images, labels, values = constant_batch(8)
    out, out_labels = make_augmenter(AugmentParams(mix="cutmix", mix_alpha=1.0), 8, seed=seed)(
        images, labels
    )
    out, y = out.numpy()[..., 0], out_labels.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    for i in range(8):
        fractions = np.array([(out[i] == v).mean() for v in values])  # area from each image
        np.testing.assert_allclose(y[i], fractions, atol=1e-6)
    assert (y.max(axis=1) < 1).any()  # something was pasted


@pytest.mark.parametrize("seed", range(4))
def test_mixup_labels_match_the_blend(seed: int) -> None:
    images, labels, values = constant_batch(8)
    out, out_labels = make_augmenter(AugmentParams(mix="mixup", mix_alpha=0.4), 8, seed=seed)(
        images, labels
    )
    y = out_labels.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.numpy()[:, 0, 0, 0], y @ values, atol=0.5 + 1e-3)
    assert ((y > 0) & (y < 1)).any()


def test_seeded_runs_repeat_and_seeds_differ(batch: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = batch
    first = make_augmenter(STRONGEST, 8, seed=11)(images, labels)
    again = make_augmenter(STRONGEST, 8, seed=11)(images, labels)
    other = make_augmenter(STRONGEST, 8, seed=12)(images, labels)
    assert np.array_equal(first[0].numpy(), again[0].numpy())
    assert np.array_equal(first[1].numpy(), again[1].numpy())
    assert not np.array_equal(first[0].numpy(), other[0].numpy())
    # A different batch (here: the same images in another order) draws other augmentations.
    swapped = make_augmenter(STRONGEST, 8, seed=11)(images[::-1], labels[::-1])
    assert not np.array_equal(first[0].numpy()[::-1], swapped[0].numpy())


def run_pipeline(
    images: np.ndarray, labels: np.ndarray, params: AugmentParams, batch_size: int, seed: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    aug = make_augmenter(params, labels.shape[1], seed=seed)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    assert ds.element_spec[0].shape.as_list() == [None, *images.shape[1:]]
    return [(x.numpy(), y.numpy()) for x, y in ds]


@pytest.mark.parametrize(
    "params", [STRONGEST, dataclasses.replace(STRONGEST, mix="mixup"), AugmentParams(2, 0.5)]
)
def test_tf_data_graph_mode_partial_last_batch_and_repeats(params: AugmentParams) -> None:
    images, labels = make_images(70, size=24, seed=2)
    onehot = np.eye(8, dtype=np.float32)[labels]
    first = run_pipeline(images, onehot, params, 32, seed=4)
    assert [len(x) for x, _ in first] == [32, 32, 6]
    for (x, y), start in zip(first, (0, 32, 64), strict=True):
        assert x.dtype == np.uint8 and x.shape[1:] == (24, 24, 3)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
        assert not np.array_equal(x, images[start : start + len(x)])
    # Parallel map, same seed: the same augmentation whatever the scheduling.
    second = run_pipeline(images, onehot, params, 32, seed=4)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


@pytest.mark.parametrize("params", EVERYTHING[1:4], ids=str)
def test_batch_of_one(params: AugmentParams) -> None:
    images, labels = make_images(3, size=16, seed=1)
    onehot = np.eye(8, dtype=np.float32)[labels]
    eager = make_augmenter(params, 8, seed=0)(images[:1], onehot[:1])
    assert eager[0].shape == (1, 16, 16, 3) and eager[0].dtype == tf.uint8
    batches = run_pipeline(images, onehot, params, 1, seed=0)
    assert [x.shape for x, _ in batches] == [(1, 16, 16, 3)] * 3
    for _, y in batches:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)


def test_params_from_trial_config_and_validation() -> None:
    cfg = TrialConfig(
        randaugment_ops=3, randaugment_magnitude=0.7, flip=False, mix="mixup", mix_alpha=0.3
    )
    params = AugmentParams.from_config(cfg)
    assert params == AugmentParams(
        3, 0.7, flip=False, rotate90=cfg.rotate90, mix="mixup", mix_alpha=0.3
    )
    assert AugmentParams().is_identity and not params.is_identity
    for bad in (
        {"randaugment_ops": -1},
        {"randaugment_ops": len(OPS) + 1},
        {"randaugment_magnitude": 1.5},
        {"mix": "augmix"},
        {"mix": "cutmix", "mix_alpha": 0.0},
    ):
        with pytest.raises(ConfigError):
            AugmentParams(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="uint8"):
        make_augmenter(STRONGEST, 8)(
            np.zeros((2, 8, 8, 3), np.float32), np.eye(8, dtype=np.float32)[:2]
        )
    with pytest.raises(ConfigError, match="one-hot"):
        make_augmenter(STRONGEST, 8)(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 5), np.float32))


def test_remap_beyond_one_reflection_stays_inside_the_image() -> None:
    """A map far wider than any op makes (x4 zoom out, shifted) is clamped, never read outside."""
    images, _ = make_images(2, size=16, seed=3)
    flat = np.ascontiguousarray(images).reshape(2, -1)
    geometry = np.array([[4.0, 0.3, 0.0, 4.0, -40.0, 90.0, 0, 0, 0, 0]] * 2)
    out = augment._remap_stage(
        flat,
        16,
        16,
        geometry,
        np.arange(2),
        np.zeros((2, 4), np.int64),
        augment._fold(16, 1),
        augment._fold(16, 16),
    ).reshape(images.shape)
    for original, moved in zip(images, out, strict=True):
        pixels = {tuple(p) for p in original.reshape(-1, 3)}
        assert all(tuple(p) in pixels for p in moved.reshape(-1, 3))
