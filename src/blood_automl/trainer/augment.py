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
_SPATIAL_OPS = ("rotate", "shear", "translate", "cutout")
_COLOUR_OPS = ("autocontrast", "brightness", "saturation", "hue", "contrast")  # in this order
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Columns of each call's uniform draws: these, then a sign per op, then the op scores.
_U_NAMES: tuple[str, ...] = ("shear_axis", "direction", "cut_y", "cut_x", "rot90", "flip_x")
_U_NAMES += ("flip_y", "mix_y", "mix_x", "perm")


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
        if images.dtype != tf.uint8 or images.shape.rank != 4 or images.shape[-1] != 3:
            raise ConfigError(
                f"images must be a uint8 batch (B, H, W, 3), but got {images.dtype.name} {images.shape}"
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
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        batch = tf.shape(images)[0]
        k, n_all = len(_U_NAMES), len(OPS)
        u = tf.random.stateless_uniform([batch, k + 2 * n_all], seeds[0])
        draws = dict(zip(_U_NAMES, tf.unstack(u[:, :k], num=k, axis=1), strict=True))
        x = images
        strength = tf.zeros([batch, n_all])  # signed magnitude of each picked op, 0 elsewhere
        n_ops = p.randaugment_ops if p.randaugment_active else 0
        if n_ops:
            picks = tf.math.top_k(u[:, k + n_all :], n_ops).indices  # (B, n) distinct ops
            signs = tf.where(u[:, k : k + n_all] < 0.5, -1.0, 1.0)
            strength = (
                tf.reduce_sum(tf.one_hot(picks, n_all), axis=1) * signs * p.randaugment_magnitude
            )
            x = _pixel_ops(x, strength)
        out_labels = labels
        geometry = _geometry(tf.shape(x), strength, draws, p)
        if p.flip or p.rotate90 or p.mix == "cutmix":
            mix = (
                _cutmix_boxes(tf.shape(x), draws, p.mix_alpha, seeds[1])
                if p.mix == "cutmix"
                else None
            )
            x, pasted = _remap(x, geometry, mix)
            if mix is not None:
                y = tf.cast(labels, tf.float32)
                y = (1.0 - pasted[:, None]) * y + pasted[:, None] * tf.gather(y, mix[0])
                out_labels = tf.cast(y, labels.dtype)
        elif n_ops:  # only the images that picked a spatial op need the gather
            spatial = tf.gather(strength, [_IDX[n] for n in _SPATIAL_OPS], axis=1)
            need = tf.reduce_any(tf.not_equal(spatial, 0.0), axis=1)
            x = _on_subset(x, need, geometry, lambda xs, gs: _remap(xs, gs, None)[0])
        if p.mix == "mixup":
            x, out_labels = _mixup(x, labels, p.mix_alpha, draws["perm"], seeds[1])
        x.set_shape(images.shape)
        return x, out_labels


# --- pixel ops: (uint8 images (n, H, W, 3), signed strength (n,)) -> uint8 images ----------


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
    params: tf.Tensor,
    fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
) -> tf.Tensor:
    """fn(images, params) on the images where ``take`` is true; the others pass through."""
    part = tf.cast(take, tf.int32)
    positions = tf.dynamic_partition(tf.range(tf.shape(x)[0]), part, 2)
    xs = tf.dynamic_partition(x, part, 2)
    return tf.dynamic_stitch(
        positions, [xs[0], fn(xs[1], tf.dynamic_partition(params, part, 2)[1])]
    )


def _pixel_ops(x: tf.Tensor, strength: tf.Tensor) -> tf.Tensor:
    """The picked pixel ops, each on the images that picked it: colour, sharpness, bits."""
    colour = tf.gather(strength, [_IDX[n] for n in _COLOUR_OPS], axis=1)
    x = _on_subset(x, tf.reduce_any(tf.not_equal(colour, 0.0), axis=1), colour, _colour)
    sharp = strength[:, _IDX["sharpness"]]
    x = _on_subset(x, tf.not_equal(sharp, 0.0), sharp, _sharpness)
    bits = tf.gather(strength, [_IDX["posterize"], _IDX["solarize"]], axis=1)
    return _on_subset(x, tf.reduce_any(tf.not_equal(bits, 0.0), axis=1), bits, _bits)


def _grid_mean(x: tf.Tensor) -> tf.Tensor:
    """(n, 3) mean colour of an 8 x 8 grid of each image's pixels (a full mean costs more)."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    grid = (tf.range(8) * h // 8 + h // 16)[:, None] * w + (tf.range(8) * w // 8 + w // 16)[None, :]
    pixels = tf.gather(tf.reshape(x, [tf.shape(x)[0], -1, 3]), tf.reshape(grid, [-1]), axis=1)
    return tf.reduce_mean(tf.cast(pixels, tf.float32), axis=1)


def _colour(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Autocontrast, brightness, saturation, hue, contrast (columns of s) as one affine map.

    y = x @ m + t per image. Saturation and hue keep grey grey, so offsets stay equal over
    the channels; the map is applied once, so only the end result is clipped to [0, 255].
    """
    w_ac, s_bright, s_sat, s_hue, s_con = tf.unstack(s, num=len(_COLOUR_OPS), axis=1)
    # Autocontrast: blend with the stretch of [min, max] (over all channels) to [0, 255].
    lo = tf.cast(tf.reduce_min(x, axis=[1, 2, 3]), tf.float32)
    hi = tf.cast(tf.reduce_max(x, axis=[1, 2, 3]), tf.float32)
    w = tf.abs(w_ac)
    stretch = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    scale = (1.0 + w * (stretch - 1.0)) * (1.0 + MAX_BRIGHTNESS * s_bright)
    shift = -w * lo * stretch * (1.0 + MAX_BRIGHTNESS * s_bright)
    # Saturation: f x + (1 - f) grey.
    f = tf.reshape(1.0 + MAX_SATURATION * s_sat, [-1, 1, 1])
    to_grey = tf.constant(np.outer(_LUMA, np.ones(3, np.float32)))[None]
    m = f * tf.eye(3)[None] + (1.0 - f) * to_grey
    # Hue: Rodrigues rotation about the grey axis (1, 1, 1) / sqrt(3); exactly I at angle 0.
    theta = tf.reshape(2.0 * math.pi * MAX_HUE_TURNS * s_hue, [-1, 1, 1])
    k = 1.0 / math.sqrt(3.0)
    cross_t = tf.constant([[0.0, k, -k], [-k, 0.0, k], [k, -k, 0.0]])  # [axis]_x transposed
    rot = tf.cos(theta) * tf.eye(3)[None] + tf.sin(theta) * cross_t[None]
    m = tf.matmul(m, rot + (1.0 - tf.cos(theta)) * tf.fill([1, 3, 3], k * k))
    m = m * tf.reshape(scale, [-1, 1, 1])
    # Contrast: (1 + c) y - c grey, grey the mean luma of y = x @ m + shift.
    xf = tf.cast(x, tf.float32)
    mean = tf.matmul(_grid_mean(x)[:, None, :], m)[:, 0, :] + shift[:, None]
    c = MAX_CONTRAST * s_con
    m = m * tf.reshape(1.0 + c, [-1, 1, 1])
    shift = (1.0 + c) * shift - c * tf.reduce_sum(mean * _LUMA, axis=1)
    y = tf.einsum("bhwc,bcd->bhwd", xf, m) + _per_image(shift + 0.5)
    return _to_uint8(y)


def _sharpness(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Blend with PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13); borders kept.

    The 3x3 sums are four ``roll``s (cheaper here than a convolution on a group of varying
    size); the wrapped-around border rows and columns are then left unchanged, as PIL does.
    """
    xf = tf.cast(x, tf.float32)
    col = xf + tf.roll(xf, 1, axis=1) + tf.roll(xf, -1, axis=1)
    box = col + tf.roll(col, 1, axis=2) + tf.roll(col, -1, axis=2)
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    rows, cols = tf.range(h)[:, None, None], tf.range(w)[None, :, None]
    inside = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
    detail = (9.0 * xf - box) * (tf.cast(inside, tf.float32) / 13.0)  # x - smooth(x) inside
    return _to_uint8((xf + 0.5) + _per_image(MAX_SHARPNESS * s) * detail)


def _bits(x: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Posterize, then solarize (columns of s), as uint8 bit operations.

    Posterize clears the low round(4 |s|) bits; solarize inverts (255 - x, an xor with 255)
    the pixels at or above ceil(256 - 128 |s|). Either is the identity at s = 0.
    """
    post, sol = tf.unstack(tf.abs(s), num=2, axis=1)
    keep = tf.cast(
        256 - tf.bitwise.left_shift(1, tf.cast(tf.round(MAX_POSTERIZE_BITS * post), tf.int32)),
        tf.uint8,
    )
    x = tf.bitwise.bitwise_and(x, _per_image(keep))
    threshold = tf.math.ceil(256.0 - MAX_SOLARIZE * sol)
    t = _per_image(tf.cast(tf.minimum(threshold, 255.0), tf.uint8))
    flip = _per_image(tf.cast(threshold <= 255.0, tf.uint8) * 255)
    return tf.bitwise.bitwise_xor(x, tf.cast(x >= t, tf.uint8) * flip)


# --- spatial ops: one source index per output pixel -----------------------------------------


def _mul2(
    p: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
    q: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Product of two batches of 2x2 matrices given as (a, b, c, d) = [[a, b], [c, d]]."""
    return (
        p[0] * q[0] + p[1] * q[2],
        p[0] * q[1] + p[1] * q[3],
        p[2] * q[0] + p[3] * q[2],
        p[2] * q[1] + p[3] * q[3],
    )


def _box(
    size: tf.Tensor, side_h: tf.Tensor, side_w: tf.Tensor, uy: tf.Tensor, ux: tf.Tensor
) -> list[tf.Tensor]:
    """[y0, y1, x0, x1]: boxes of the given sides centred uniformly, clipped to the image."""
    h, w = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
    y0 = tf.floor(uy * h) - tf.floor(side_h / 2.0)
    x0 = tf.floor(ux * w) - tf.floor(side_w / 2.0)
    return [
        tf.clip_by_value(y0, 0.0, h),
        tf.clip_by_value(y0 + side_h, 0.0, h),
        tf.clip_by_value(x0, 0.0, w),
        tf.clip_by_value(x0 + side_w, 0.0, w),
    ]


def _geometry(
    shape: tf.Tensor, strength: tf.Tensor, draws: dict[str, tf.Tensor], p: AugmentParams
) -> tf.Tensor:
    """(B, 10) per image: source x = a X + b Y + e, y = c X + d Y + f, and the cutout box.

    Columns a, b, c, d, e, f, y0, y1, x0, x1; X, Y are output pixel indices, the source
    coordinates are shifted by +0.5 for rounding. Rotation, shear and translation act about
    the image centre; flips and 90-degree turns use exact 0 / +-1 entries.
    """
    batch = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)

    theta = strength[:, _IDX["rotate"]] * (MAX_ROTATE_DEGREES * math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    one, zero = tf.ones([batch]), tf.zeros([batch])
    shear = MAX_SHEAR * strength[:, _IDX["shear"]]
    along_x = tf.cast(draws["shear_axis"] < 0.5, tf.float32)
    lin = _mul2((cos, -sin, sin, cos), (one, along_x * shear, (1.0 - along_x) * shear, one))
    if p.rotate90:
        k = tf.cast(tf.floor(draws["rot90"] * 4.0), tf.int32)
        c90 = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), k)
        s90 = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), k)
        lin = _mul2((c90, -s90, s90, c90), lin)
    if p.flip:
        fx = tf.where(draws["flip_x"] < 0.5, -1.0, 1.0)
        fy = tf.where(draws["flip_y"] < 0.5, -1.0, 1.0)
        lin = _mul2((fx, zero, zero, fy), lin)
    a, b, c, d = lin
    phi = 2.0 * math.pi * draws["direction"]
    dist = MAX_TRANSLATE * tf.abs(strength[:, _IDX["translate"]])
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    e = (cx + 0.5 + dist * w * tf.cos(phi)) - (a * cx + b * cy)
    f = (cy + 0.5 + dist * h * tf.sin(phi)) - (c * cx + d * cy)
    side = tf.round(MAX_CUTOUT * tf.abs(strength[:, _IDX["cutout"]]) * h)
    box = _box(shape[1:3], side, side, draws["cut_y"], draws["cut_x"])
    return tf.stack([a, b, c, d, e, f, *box], axis=1)


def _reflect(v: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Pixel index of coordinate v - 0.5 (half up) reflected into [0, n) about the edges.

    One reflection each side is enough: the strongest rotate + shear + translate keeps
    coordinates within (-n, 2n).
    """
    return tf.floor(tf.minimum(n - tf.abs(tf.abs(v) - n), n - 0.5))


def _in_box(box: list[tf.Tensor], h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """(n, H, W) float 0/1: whether each pixel lies in its image's [y0, y1) x [x0, x1) box."""
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    y0, y1, x0, x1 = (tf.reshape(v, [-1, 1, 1]) for v in box)
    in_rows = tf.cast((rows >= y0) & (rows < y1), tf.float32)
    return in_rows * tf.cast((cols >= x0) & (cols < x1), tf.float32)


def _cutmix_boxes(
    shape: tf.Tensor, draws: dict[str, tf.Tensor], alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Partner of each image and the box its partner pastes: area 1 - lambda, lambda ~ Beta."""
    lam = _beta(alpha, shape[0], seed)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    ratio = tf.sqrt(1.0 - lam)
    box = _box(shape[1:3], tf.round(ratio * h), tf.round(ratio * w), draws["mix_y"], draws["mix_x"])
    return tf.argsort(draws["perm"]), box


def _index_rows_cols(g: tf.Tensor, h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Source index maps of images whose map is separable (no rotation but by 90, no shear).

    Then the source x depends on one output axis only and so does the source y, and the flat
    index is a row part plus a column part: every costly step runs on (n, H) and (n, W).
    """
    a, b, c, d, e, f, first = (v[:, None] for v in tf.unstack(g, num=7, axis=1))
    xs, ys = tf.range(w)[None, :], tf.range(h)[None, :]
    turned = tf.cast(tf.equal(a, 0.0), tf.float32)  # odd 90-degree turn: x from Y, y from X
    col = (1.0 - turned) * _reflect(a * xs + e, w) + turned * w * _reflect(c * xs + f, h)
    row = (1.0 - turned) * w * _reflect(d * ys + f, h) + turned * _reflect(b * ys + e, w)
    return (row + first * w)[:, :, None] + col[:, None, :]


def _index_general(g: tf.Tensor, h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """Source index maps of any affine geometry: every step on (n, H, W)."""
    a, b, c, d, e, f, first = (tf.reshape(v, [-1, 1, 1]) for v in tf.unstack(g, num=7, axis=1))
    xs, ys = tf.range(w)[None, None, :], tf.range(h)[None, :, None]
    src_x = _reflect((a * xs + e) + b * ys, w)
    src_y = _reflect((c * xs + f) + d * ys, h)
    return (src_y + first) * w + src_x


def _remap(
    x: tf.Tensor, geometry: tf.Tensor, mix: tuple[tf.Tensor, list[tf.Tensor]] | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply ``_geometry`` (and CutMix) by one gather; return the images and pasted fractions."""
    shape = tf.shape(x)
    n = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    zero = tf.equal(geometry[:, :4], 0.0)
    separable = (zero[:, 1] & zero[:, 2]) | (zero[:, 0] & zero[:, 3])
    first_row = tf.range(tf.cast(n, tf.float32)) * h  # exact in float32 up to 2**24 pixels
    g = tf.concat([geometry[:, :6], first_row[:, None]], axis=1)
    part = tf.cast(separable, tf.int32)
    positions = tf.dynamic_partition(tf.range(n), part, 2)
    gs = tf.dynamic_partition(g, part, 2)
    index = tf.dynamic_stitch(
        positions, [_index_general(gs[0], h, w), _index_rows_cols(gs[1], h, w)]
    )
    # Cutout points at the image's background pixel, stored after all the image pixels.
    flat = tf.reshape(x, [n, -1, 3])
    corners = tf.stack([0, shape[2] - 1, (shape[1] - 1) * shape[2], shape[1] * shape[2] - 1])
    background = tf.reduce_mean(tf.cast(tf.gather(flat, corners, axis=1), tf.float32), axis=1)
    background_index = tf.reshape(tf.range(tf.cast(n, tf.float32)), [-1, 1, 1]) + h * w * tf.cast(
        n, tf.float32
    )
    box = tf.unstack(geometry[:, 6:], num=4, axis=1)
    index = index + _in_box(box, h, w) * (background_index - index)
    pasted = tf.zeros([n])
    if mix is not None:
        perm, box = mix
        index = index + _in_box(box, h, w) * (tf.gather(index, perm) - index)
        pasted = (box[1] - box[0]) * (box[3] - box[2]) / (h * w)
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
