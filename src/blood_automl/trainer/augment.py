"""Fast batched augmentation: RandAugment-style ops, flips, 90-degree turns, MixUp and CutMix."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from blood_automl.errors import ConfigError

Mix = Literal["none", "mixup", "cutmix"]

# The RandAugment op list. Each image picks ``randaugment_ops`` distinct ops uniformly from it
# ("identity" uses up a pick and does nothing, as in the paper). The magnitude m in [0, 1]
# scales every op's strength linearly and m = 0 is the identity for every op; signed ops draw
# their sign per image. Cells have no orientation, so shear takes a random axis and translate
# a random direction per image.
OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",  # blend with the min-max stretch of the image (all channels), weight m
    "brightness",  # multiply by 1 +/- 0.5 m
    "contrast",  # blend with the image's mean grey, factor 1 +/- 0.5 m
    "saturation",  # blend with the grey image, factor 1 +/- 0.5 m
    "hue",  # rotate colours about the grey axis by +/- 0.06 m of a turn (stains: moderate)
    "sharpness",  # blend with PIL's 3x3 smoothed image, factor 1 +/- 0.9 m
    "posterize",  # keep 8 - round(4 m) bits
    "solarize",  # invert the pixels >= 256 - 128 m
    "rotate",  # rotate by +/- 30 m degrees
    "shear",  # shear along x or y by +/- 0.3 m
    "translate",  # shift by 0.2 m of the image size in a random direction
    "cutout",  # paint a square of side 0.4 m of the image size in the background colour
)
MAX_BRIGHTNESS = 0.5
MAX_CONTRAST = 0.5
MAX_SATURATION = 0.5
MAX_HUE_TURNS = 0.06
MAX_SHARPNESS = 0.9
MAX_POSTERIZE_BITS = 4
MAX_SOLARIZE = 128.0
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE = 0.2
MAX_CUTOUT = 0.4

# How it stays cheap on a CPU (uint8 batches in and out; no per-image Python or map_fn):
# - Each op works only on the images that picked it: ``dynamic_partition`` splits the batch,
#   ``dynamic_stitch`` puts it back. The colour ops an image picked (autocontrast, brightness,
#   saturation, hue, contrast, in that order) are composed into one 3x3 matrix and offset per
#   image and applied at once; then sharpness, posterize and solarize (the last two as uint8
#   bit operations). Results are rounded to uint8 after each of these steps.
# - Spatial ops (rotate, shear, translate, cutout), flips, 90-degree turns and CutMix are
#   folded into one source-pixel index per output pixel and applied by one ``gather_nd``:
#   nearest-neighbour sampling (torchvision's RandAugment default). Pixels that map outside
#   the image are filled by reflection (the background of a smear continues past the border;
#   a constant would add corners that real images never have). Flips, 90-degree turns and
#   m = 0 map pixel centres onto pixel centres, so they are exact. Cutout paints with the
#   image's background colour (the mean of its four corners).
# So the picked ops run in a fixed order (colour, sharpness, posterize, solarize, spatial),
# not in the order they were picked.
FILL_MODE = "reflect"

_IDX = {name: i for i, name in enumerate(OPS)}
_ROTATE, _SHEAR, _TRANSLATE, _CUTOUT = (_IDX[n] for n in ("rotate", "shear", "translate", "cutout"))
_SPATIAL = [_ROTATE, _SHEAR, _TRANSLATE, _CUTOUT]
_COLOUR = [_IDX[n] for n in ("autocontrast", "brightness", "saturation", "hue", "contrast")]
_BITS = [_IDX["posterize"], _IDX["solarize"]]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Columns of each call's uniform draws (B, _N_DRAWS + 2 * len(OPS)): these, then a sign per op,
# then the scores whose top ``randaugment_ops`` are the picked ops.
_AXIS, _DIRECTION, _ROT90, _PERM = 0, 1, 4, 9
_CUT, _FLIP, _MIX = 2, 5, 7  # two columns each: (y, x)
_N_DRAWS = 10
# The colour map of an image is gain * (f cos I + f sin K + f (1 - cos) J / 3 + (1 - f) G):
# saturation f, hue rotation (cos, sin) about the grey axis, G = luma in every column.
_K = 1.0 / math.sqrt(3.0)
_COLOUR_BASIS = np.stack(
    [
        np.eye(3),
        np.array(
            [[0.0, _K, -_K], [-_K, 0.0, _K], [_K, -_K, 0.0]]
        ),  # cross product with the axis, transposed
        np.full((3, 3), 1.0 / 3.0),
        np.outer(_LUMA, np.ones(3)),
    ]
).astype(np.float32)


@dataclass(frozen=True)
class AugmentParams:
    """What to do to a training batch; the default is no augmentation at all."""

    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.0
    flip: bool = False
    rotate90: bool = False
    mix: Mix = "none"
    mix_alpha: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.randaugment_ops <= len(OPS):
            raise ConfigError(
                f"randaugment_ops must be in [0, {len(OPS)}], but got {self.randaugment_ops}"
            )
        if not 0.0 <= self.randaugment_magnitude <= 1.0:
            raise ConfigError(
                f"randaugment_magnitude must be in [0, 1], but got {self.randaugment_magnitude}"
            )
        if self.mix not in ("none", "mixup", "cutmix"):
            raise ConfigError(f"mix must be 'none', 'mixup' or 'cutmix', but got {self.mix!r}")
        if self.mix != "none" and not self.mix_alpha > 0.0:
            raise ConfigError(
                f"mix_alpha must be > 0 when mix is {self.mix!r}, but got {self.mix_alpha}"
            )

    @classmethod
    def from_config(cls, cfg: Any) -> AugmentParams:
        """Read the same-named fields of a ``TrialConfig`` (or any object that has them)."""
        return cls(
            randaugment_ops=int(cfg.randaugment_ops),
            randaugment_magnitude=float(cfg.randaugment_magnitude),
            flip=bool(cfg.flip),
            rotate90=bool(cfg.rotate90),
            mix=cfg.mix,
            mix_alpha=float(cfg.mix_alpha),
        )

    @property
    def randaugment_active(self) -> bool:
        """Whether RandAugment can change a pixel (ops > 0 and magnitude > 0)."""
        return self.randaugment_ops > 0 and self.randaugment_magnitude > 0.0

    @property
    def is_identity(self) -> bool:
        """Whether the augmenter returns its input unchanged."""
        return not (self.randaugment_active or self.flip or self.rotate90 or self.mix != "none")


def make_augmenter(
    params: AugmentParams, num_classes: int, seed: int | None = None
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Batch augmenter: (uint8 images (B,H,W,3), one-hot labels (B,C)) -> same shapes and dtypes.

    Use it in ``tf.data`` after ``.batch()`` (``ds.map(aug, num_parallel_calls=...)``) or
    call it eagerly. Randomness is stateless (``tf.random.stateless_*``). The seed of a call
    is (seed, a fingerprint of the batch's pixels), not a counter: a counter would be read in
    a different order by a parallel ``map``, whereas this way a run repeats exactly however
    the batches are scheduled. The same batch therefore gets the same augmentation, so shuffle
    the data each epoch (the trainer does), or pass a per-call ``seed`` (a shape-(2,) integer
    tensor) as a third argument. Without a seed the base seed comes from the operating system.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, but got {num_classes}")
    base = seed if seed is not None else random.SystemRandom().randrange(2**31)
    return _Augmenter(params, num_classes, base)


class _Augmenter:
    """The callable that ``make_augmenter`` returns."""

    def __init__(self, params: AugmentParams, num_classes: int, base_seed: int) -> None:
        self.params = params
        self.num_classes = num_classes
        self.base_seed = base_seed

    def __call__(
        self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.convert_to_tensor(images)
        labels = tf.convert_to_tensor(labels)
        shape = images.shape
        if images.dtype != tf.uint8 or shape.rank != 4 or shape[-1] != 3 or None in shape[1:3]:
            raise ConfigError(
                "images must be a uint8 batch (B, H, W, 3) of known H and W, but got "
                f"{images.dtype.name} {shape}"
            )
        if labels.shape.rank != 2 or labels.shape[-1] not in (None, self.num_classes):
            raise ConfigError(
                f"labels must be one-hot (B, {self.num_classes}), but got shape {labels.shape}"
            )
        p = self.params
        if p.is_identity:
            return images, labels
        if seed is None:
            digest = tf.fingerprint(tf.reshape(tf.fingerprint(images), [1, -1]))
            seed = tf.stack(
                [tf.constant(self.base_seed, tf.int64), tf.bitcast(digest, tf.int64)[0]]
            )
        seed = tf.cast(seed, tf.int64)
        size = (int(shape[1]), int(shape[2]))
        everyone = tf.range(tf.shape(images)[0])
        n_all, n_ops = len(OPS), (p.randaugment_ops if p.randaugment_active else 0)
        u = tf.random.stateless_uniform([tf.shape(everyone)[0], _N_DRAWS + 2 * n_all], seed)
        x, strength = images, None
        if n_ops:
            picks = tf.math.top_k(u[:, _N_DRAWS + n_all :], n_ops).indices  # distinct ops
            signs = tf.sign(u[:, _N_DRAWS : _N_DRAWS + n_all] - 0.5)
            strength = tf.reduce_sum(tf.one_hot(picks, n_all), axis=1) * (
                signs * p.randaugment_magnitude
            )
            x = _pixel_ops(x, strength, everyone)
        out_labels = labels
        if p.flip or p.rotate90 or p.mix == "cutmix":
            geometry = _geometry(strength, u, p, size)
            mix = None
            if p.mix == "cutmix":
                mix = _cutmix_boxes(u, p.mix_alpha, seed + tf.constant([0, 1], tf.int64), size)
            x, pasted = _remap(x, geometry, mix, size)
            if mix is not None:
                y = tf.cast(labels, tf.float32)
                y = y + pasted[:, None] * (tf.gather(y, mix[0]) - y)
                out_labels = tf.cast(y, labels.dtype)
        elif strength is not None:  # only the images that picked a spatial op need the gather
            need = tf.reduce_any(tf.not_equal(tf.gather(strength, _SPATIAL, axis=1), 0.0), axis=1)
            x = _on_subset(
                x,
                need,
                everyone,
                _geometry(strength, u, p, size),
                lambda xs, gs: _remap(xs, gs, None, size)[0],
            )
        if p.mix == "mixup":
            x, out_labels = _mixup(
                x, labels, p.mix_alpha, u[:, _PERM], seed + tf.constant([0, 1], tf.int64)
            )
        x.set_shape(shape)
        return x, out_labels


# --- pixel ops: (uint8 images (n, H, W, 3), per-image parameters) -> uint8 images -----------


def _per_image(v: tf.Tensor) -> tf.Tensor:
    return tf.reshape(v, [-1, 1, 1, 1])


def _to_uint8(y: tf.Tensor) -> tf.Tensor:
    """Clip to [0, 255] and truncate: the uint8 of y - 0.5 rounded half up.

    The ops add 0.5 into their own offsets, so that integer input comes back exactly.
    """
    return tf.cast(tf.clip_by_value(y, 0.0, 255.0), tf.uint8)


def _on_subset(
    x: tf.Tensor,
    take: tf.Tensor,
    everyone: tf.Tensor,
    params: tf.Tensor,
    fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
) -> tf.Tensor:
    """fn(images, params) on the images where ``take`` is true; the others pass through."""
    part = tf.cast(take, tf.int32)
    positions = tf.dynamic_partition(everyone, part, 2)
    xs = tf.dynamic_partition(x, part, 2)
    return tf.dynamic_stitch(
        positions, [xs[0], fn(xs[1], tf.dynamic_partition(params, part, 2)[1])]
    )


def _pixel_ops(x: tf.Tensor, strength: tf.Tensor, everyone: tf.Tensor) -> tf.Tensor:
    """The picked pixel ops, each on the images that picked it: colour, sharpness, bits."""
    colour = tf.gather(strength, _COLOUR, axis=1)
    picked = tf.cast(tf.not_equal(colour, 0.0), tf.int32)
    # 0: no colour op, 1: only ops that scale all channels alike, 2: saturation or hue too
    kind = tf.maximum(tf.reduce_max(picked, axis=1), 2 * tf.reduce_max(picked[:, 2:4], axis=1))
    positions = tf.dynamic_partition(everyone, kind, 3)
    xs = tf.dynamic_partition(x, kind, 3)
    maps = tf.dynamic_partition(_colour_maps(x, colour), kind, 3)
    scaled = _to_uint8(
        tf.cast(xs[1], tf.float32) * _per_image(maps[1][:, 0]) + _per_image(maps[1][:, 9])
    )
    mixed = tf.einsum(
        "bhwc,bcd->bhwd", tf.cast(xs[2], tf.float32), tf.reshape(maps[2][:, :9], [-1, 3, 3])
    )
    mixed = _to_uint8(mixed + _per_image(maps[2][:, 9]))
    x = tf.dynamic_stitch(positions, [xs[0], scaled, mixed])
    sharp = strength[:, _IDX["sharpness"]]
    x = _on_subset(x, tf.not_equal(sharp, 0.0), everyone, sharp, _sharpness)
    bits = tf.gather(strength, _BITS, axis=1)
    return _on_subset(x, tf.reduce_any(tf.not_equal(bits, 0.0), axis=1), everyone, bits, _bits)


def _colour_maps(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """(n, 10): autocontrast, brightness, saturation, hue, contrast (columns of s) as one map.

    y = x @ m + t per image, m flattened in columns 0-8 and t (+ 0.5) in column 9.
    Saturation and hue keep grey grey, so the offset is the same for the three channels;
    the map is applied once, so only the end result is clipped. At s = 0 it is exactly
    m = I, t = 0.
    """
    ac, bright, sat, hue, con = tf.unstack(s, num=5, axis=1)
    # Autocontrast: blend with the stretch of [min, max] (over all channels) to [0, 255].
    lo = tf.cast(tf.reduce_min(x, axis=[1, 2, 3]), tf.float32)
    span = tf.cast(tf.reduce_max(x, axis=[1, 2, 3]), tf.float32) - lo
    w = tf.abs(ac) * tf.cast(span > 0.0, tf.float32)  # a flat image stays as it is
    stretch = 255.0 / tf.maximum(span, 1.0)
    gain = (1.0 + w * (stretch - 1.0)) * (1.0 + MAX_BRIGHTNESS * bright)
    shift = (w * lo * stretch) * (-1.0 - MAX_BRIGHTNESS * bright)  # -w lo stretch (1 + b)
    f = 1.0 + MAX_SATURATION * sat
    theta = (2.0 * math.pi * MAX_HUE_TURNS) * hue
    cos = tf.cos(theta)
    coef = tf.stack([f * cos, f * tf.sin(theta), f * (1.0 - cos), 1.0 - f], axis=1)
    m = tf.reduce_sum(coef[:, :, None, None] * _COLOUR_BASIS, axis=1) * tf.reshape(gain, [-1, 1, 1])
    # Contrast: (1 + c) y - c grey, grey = mean luma of y = x @ m + shift.
    grey = tf.reduce_sum(_grid_mean(x)[:, :, None] * m * _LUMA, axis=[1, 2]) + shift
    c = MAX_CONTRAST * con
    m = tf.reshape(m, [-1, 9]) * (1.0 + c)[:, None]
    return tf.concat([m, ((1.0 + c) * shift - c * grey + 0.5)[:, None]], axis=1)


def _grid_mean(x: tf.Tensor) -> tf.Tensor:
    """(n, 3) mean colour of an 8 x 8 grid of each image's pixels (a full mean costs more)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    grid = (np.arange(8) * h // 8 + h // 16)[:, None] * w + (np.arange(8) * w // 8 + w // 16)
    pixels = tf.gather(tf.reshape(x, [-1, h * w, 3]), grid.reshape(-1), axis=1)
    return tf.reduce_mean(tf.cast(pixels, tf.float32), axis=1)


def _sharpness(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Blend with PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13); borders kept.

    The 3x3 sums are four ``roll``s (cheaper here than a convolution on a group of varying
    size); the wrapped-around border rows and columns are then left unchanged, as PIL does.
    """
    xf = tf.cast(x, tf.float32)
    col = xf + tf.roll(xf, 1, axis=1) + tf.roll(xf, -1, axis=1)
    box = col + tf.roll(col, 1, axis=2) + tf.roll(col, -1, axis=2)
    inside = np.zeros((int(x.shape[1]), int(x.shape[2]), 1), np.float32)
    inside[1:-1, 1:-1] = 1.0 / 13.0
    detail = (9.0 * xf - box) * inside  # x - smooth(x) inside, 0 on the border
    return _to_uint8((xf + 0.5) + _per_image(MAX_SHARPNESS * s) * detail)


def _bits(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Posterize, then solarize (columns of s), as uint8 bit operations.

    Posterize clears the low round(4 |s|) bits; solarize inverts (255 - x, an xor with 255)
    the pixels at or above ceil(256 - 128 |s|). Either is the identity at s = 0.
    """
    post, sol = tf.unstack(tf.abs(s), num=2, axis=1)
    drop = tf.cast(tf.round(MAX_POSTERIZE_BITS * post), tf.int32)
    x = tf.bitwise.bitwise_and(
        x, _per_image(tf.cast(256 - tf.bitwise.left_shift(1, drop), tf.uint8))
    )
    threshold = tf.math.ceil(256.0 - MAX_SOLARIZE * sol)
    t = _per_image(tf.cast(tf.minimum(threshold, 255.0), tf.uint8))
    flip = _per_image(tf.cast(threshold <= 255.0, tf.uint8) * 255)
    return tf.bitwise.bitwise_xor(x, tf.cast(x >= t, tf.uint8) * flip)


# --- spatial ops: one source index per output pixel -----------------------------------------


def _geometry(
    strength: tf.Tensor | None, u: tf.Tensor, p: AugmentParams, size: tuple[int, int]
) -> tf.Tensor:
    """(B, 10) per image: the map from output to source pixel, and the cutout box.

    Columns a, b, c, d, e, f, y0, y1, x0, x1: source x = a X + b Y + e, y = c X + d Y + f
    for output pixel (X, Y), shifted by +0.5 for rounding. Rotation, shear and translation
    act about the image centre; flips and 90-degree turns have exact 0 / +-1 entries.
    """
    h, w = size
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0], np.float32)
    n = tf.shape(u)[0]
    if strength is None:
        lin = tf.tile(tf.constant([[[1.0, 0.0], [0.0, 1.0]]]), [n, 1, 1])
        shift = tf.zeros([n, 2])
        box = tf.zeros([n, 4])
    else:
        theta = strength[:, _ROTATE] * (MAX_ROTATE_DEGREES * math.pi / 180.0)
        cos, sin = tf.cos(theta), tf.sin(theta)
        shear = MAX_SHEAR * strength[:, _SHEAR]
        sx = tf.where(u[:, _AXIS] < 0.5, shear, 0.0)
        sy = shear - sx  # rotation @ [[1, sx], [sy, 1]]:
        lin = tf.reshape(
            tf.stack([cos - sin * sy, cos * sx - sin, sin + cos * sy, sin * sx + cos], axis=1),
            [-1, 2, 2],
        )
        phi = 2.0 * math.pi * u[:, _DIRECTION, None] - np.array([0.0, math.pi / 2], np.float32)
        dist = (MAX_TRANSLATE * tf.abs(strength[:, _TRANSLATE]))[:, None]
        shift = tf.cos(phi) * dist * np.array([w, h], np.float32)  # (dx, dy)
        side = tf.round((MAX_CUTOUT * h) * tf.abs(strength[:, _CUTOUT]))[:, None]
        box = _box(u[:, _CUT : _CUT + 2], side, side, size)
    if p.rotate90 or p.flip:
        k = (
            tf.cast(tf.floor(u[:, _ROT90] * 4.0), tf.int32)
            if p.rotate90
            else tf.zeros([n], tf.int32)
        )
        turns = tf.gather(tf.constant(_DIHEDRAL_TURNS), k)  # (n, 2, 2)
        if p.flip:  # flip the x and y rows
            turns = turns * tf.where(u[:, _FLIP : _FLIP + 2, None] < 0.5, -1.0, 1.0)
        lin = tf.reduce_sum(turns[:, :, :, None] * lin[:, None, :, :], axis=2)
    offset = (centre + 0.5) + shift - tf.reduce_sum(lin * centre, axis=2)
    return tf.concat([tf.reshape(lin, [-1, 4]), offset, box], axis=1)


_DIHEDRAL_TURNS = np.array(
    [[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]]], np.float32
)


def _box(
    where: tf.Tensor, side_h: tf.Tensor, side_w: tf.Tensor, size: tuple[int, int]
) -> tf.Tensor:
    """(n, 4) boxes [y0, y1, x0, x1] of the given sides centred at where * (H, W), clipped."""
    hw = np.array([size[0], size[1]], np.float32)
    sides = tf.concat([side_h, side_w], axis=1)
    start = tf.floor(where * hw) - tf.floor(sides / 2.0)
    lo, hi = tf.clip_by_value(start, 0.0, hw), tf.clip_by_value(start + sides, 0.0, hw)
    return tf.reshape(tf.stack([lo, hi], axis=2), [-1, 4])


def _reflect(v: tf.Tensor, n: Any) -> tf.Tensor:
    """Pixel index of coordinate v - 0.5 (half up) reflected into [0, n) about the edges.

    One reflection each side is enough: the strongest rotate + shear + translate keeps
    coordinates within (-n, 2n).
    """
    return tf.floor(tf.minimum(n - tf.abs(tf.abs(v) - n), n - 0.5))


def _index_general(g: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Source indices (n, H, W) for any affine map: every step on (n, 2, H, W)."""
    h, w = size
    rows = tf.reshape(tf.gather(g, [0, 1, 4, 2, 3, 5, 6], axis=1), [-1, 7, 1, 1])
    a_e = rows[:, 0:6:3] * np.arange(w, dtype=np.float32) + rows[:, 2:6:3]  # (n, 2, 1, W)
    v = a_e + rows[:, 1:6:3] * np.arange(h, dtype=np.float32)[:, None]  # (n, 2, H, W): x, y
    limits = np.array([w, h], np.float32)[:, None, None]
    src = _reflect(v, limits) * np.array([1.0, w], np.float32)[:, None, None]
    return tf.reduce_sum(src, axis=1) + rows[:, 6] * w


def _index_separable(g: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Source indices for maps with b = c = 0 or a = d = 0 (no rotation but by 90, no shear).

    Then each source coordinate depends on one output axis, and the index is a column part
    plus a row part: every costly step runs on (n, 2, L), L = max(H, W).
    """
    h, w = size
    span = np.arange(max(h, w), dtype=np.float32)
    turned = tf.equal(g[:, :1], 0.0)  # odd 90-degree turn: source x from Y, source y from X
    # Per image: [coefficient, offset] of the column part (from X) and of the row part (from Y).
    straight = tf.gather(g, [0, 4, 3, 5], axis=1)  # x = a X + e, y = d Y + f
    swapped = tf.gather(g, [2, 5, 1, 4], axis=1)  # y = c X + f, x = b Y + e
    coef = tf.reshape(tf.where(turned, swapped, straight), [-1, 2, 2, 1])
    limits = np.array([[w, h], [h, w]], np.float32)  # the source axis of each part
    scales = np.array([[1.0, w], [w, 1.0]], np.float32)  # its weight in the flat index
    pick = tf.cast(turned, tf.int32)[:, 0]
    src = _reflect(coef[:, :, 0] * span + coef[:, :, 1], tf.gather(limits, pick)[:, :, None])
    part = src * tf.gather(scales, pick)[:, :, None]
    return (part[:, 1, :h] + g[:, 6:7] * w)[:, :, None] + part[:, 0, None, :w]


def _in_box(box: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """(n, H, W) float 0/1: whether each pixel lies in its image's [y0, y1) x [x0, x1) box."""
    span = np.arange(max(size), dtype=np.float32)
    inside = tf.cast(
        (span >= box[:, 0::2, None]) & (span < box[:, 1::2, None]), tf.float32
    )  # (n, 2, L): rows, columns
    return inside[:, 0, : size[0], None] * inside[:, 1, None, : size[1]]


def _cutmix_boxes(
    u: tf.Tensor, alpha: float, seed: tf.Tensor, size: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Partner of each image and the box its partner pastes: area 1 - lambda, lambda ~ Beta."""
    ratio = tf.sqrt(1.0 - _beta(alpha, tf.shape(u)[0], seed))[:, None]
    box = _box(u[:, _MIX : _MIX + 2], tf.round(ratio * size[0]), tf.round(ratio * size[1]), size)
    return tf.argsort(u[:, _PERM]), box


def _remap(
    x: tf.Tensor,
    geometry: tf.Tensor,
    mix: tuple[tf.Tensor, tf.Tensor] | None,
    size: tuple[int, int],
) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply ``_geometry`` (and CutMix) by one gather; return the images and pasted fractions."""
    h, w = size
    n = tf.shape(x)[0]
    everyone = tf.range(n)
    # first row of each image in the flat batch, exact in float32 up to 2**24 pixels
    g = tf.concat([geometry[:, :6], tf.cast(everyone, tf.float32)[:, None] * h], axis=1)
    zero = tf.cast(tf.equal(geometry[:, :4], 0.0), tf.float32)  # a, b, c, d == 0
    part = tf.cast(tf.maximum(zero[:, 1] * zero[:, 2], zero[:, 0] * zero[:, 3]), tf.int32)
    positions = tf.dynamic_partition(everyone, part, 2)
    gs = tf.dynamic_partition(g, part, 2)
    index = tf.dynamic_stitch(
        positions, [_index_general(gs[0], size), _index_separable(gs[1], size)]
    )
    # Cutout: the box points at the image's background pixel, stored after all image pixels.
    flat = tf.reshape(x, [-1, h * w, 3])
    corners = tf.gather(flat, [0, w - 1, (h - 1) * w, h * w - 1], axis=1)
    background = tf.reduce_mean(tf.cast(corners, tf.float32), axis=1)
    background_index = tf.reshape(tf.cast(everyone + n * (h * w), tf.float32), [-1, 1, 1])
    index = index + _in_box(geometry[:, 6:], size) * (background_index - index)
    pasted = tf.zeros([n])
    if mix is not None:
        perm, box = mix
        index = index + _in_box(box, size) * (tf.gather(index, perm) - index)
        pasted = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]) / (h * w)
    source = tf.concat([tf.reshape(flat, [-1, 3]), _to_uint8(background + 0.5)], axis=0)
    # gather_nd is about 3x faster than gather for these 3-byte rows.
    return tf.gather_nd(source, tf.cast(index, tf.int32)[..., None]), pasted


# --- MixUp ----------------------------------------------------------------------------------


def _beta(alpha: float, n: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) samples as G1 / (G1 + G2)."""
    g = tf.random.stateless_gamma([2, n], seed, alpha=alpha)
    return g[0] / tf.maximum(g[0] + g[1], 1e-30)


def _mixup(
    x: tf.Tensor, labels: tf.Tensor, alpha: float, u_perm: tf.Tensor, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each image with a random partner from the batch; labels by the same weight."""
    perm = tf.argsort(u_perm)
    lam = _beta(alpha, tf.shape(x)[0], seed)
    xf = tf.cast(x, tf.float32)
    mixed = _to_uint8((xf + 0.5) + _per_image(1.0 - lam) * (tf.gather(xf, perm) - xf))
    y = tf.cast(labels, tf.float32)
    out = lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, perm)
    return mixed, tf.cast(out, labels.dtype)
