"""Fast batched augmentation: RandAugment-style ops, flips, 90-degree turns, MixUp and CutMix."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numba
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

# How it stays cheap: a batch is one call. NumPy draws the random numbers (Philox, keyed by
# the call's seed); everything else is compiled loops (Numba: no GIL, so ``tf.data``'s
# parallel ``map`` runs batches side by side; compiled once per machine and cached on disk):
# each image's parameters, then at most three passes over its pixels, each skipped where it
# has nothing to do:
# 1. pixel ops: the colour ops an image picked (autocontrast, brightness, saturation, hue,
#    contrast, in that order) composed into one 3x3 matrix and offset (one gain and offset
#    when neither saturation nor hue is picked), then sharpness, then posterize and solarize.
#    Values are rounded to uint8 after the colour map and after sharpness, as PIL does.
# 2. spatial ops: rotate, shear, translate, cutout, flips, 90-degree turns and CutMix folded
#    into one source pixel per output pixel: nearest-neighbour sampling (torchvision's
#    RandAugment default). Pixels that map outside the image are filled by reflection (the
#    background of a smear continues past the border; a constant would add corners that real
#    images never have). Flips, 90-degree turns and m = 0 map pixel centres onto pixel
#    centres, so they are exact. Cutout paints with the image's background colour (the mean
#    of its four corners).
# 3. MixUp.
# So the picked ops run in a fixed order (colour, sharpness, posterize, solarize, spatial),
# not in the order they were picked.
FILL_MODE = "reflect"

_IDX = {name: i for i, name in enumerate(OPS)}
_ROTATE, _SHEAR, _TRANSLATE, _CUTOUT = (_IDX[n] for n in ("rotate", "shear", "translate", "cutout"))
_AUTOCONTRAST, _BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _SHARPNESS, _POSTERIZE, _SOLARIZE = (
    _IDX[n]
    for n in (
        "autocontrast",
        "brightness",
        "contrast",
        "saturation",
        "hue",
        "sharpness",
        "posterize",
        "solarize",
    )
)
_N_OPS = len(OPS)
_MIXES = ("none", "mixup", "cutmix")
_LUMA = np.array([0.299, 0.587, 0.114])
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
)
_DIHEDRAL_TURNS = np.array(
    [[[1, 0], [0, 1]], [[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]]], np.float64
)
# Compiled once per machine (some seconds) and cached on disk; the GIL is released while they
# run. Kernels take C-contiguous arrays (``augment_batch`` makes sure of it).
_jit = numba.njit(nogil=True, cache=True)


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
    call it eagerly; it is one ``tf.numpy_function`` op running ``augment_batch``. The seed
    of a call is (seed, a hash of the batch's pixels), not a counter: a counter would be read
    in a different order by a parallel ``map``, whereas this way a run repeats exactly however
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
        if self.params.is_identity:
            return images, labels
        hashed = seed is None  # then the second half of the seed is a hash of the pixels
        if seed is None:
            seed = tf.constant([self.base_seed, 0], tf.int64)
        x, y = tf.numpy_function(
            self._run,
            [images, labels, tf.cast(seed, tf.int64), tf.constant(hashed)],
            [tf.uint8, labels.dtype],
            stateful=False,  # a pure function of its inputs
            name="augment_batch",
        )
        x.set_shape(shape)
        y.set_shape(labels.shape)
        return x, y

    def _run(
        self, images: np.ndarray, labels: np.ndarray, seed: np.ndarray, hashed: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        salt = int(seed[1])
        if hashed:
            salt = int(_pixel_hash(np.ascontiguousarray(images).reshape(-1)))
        return augment_batch(images, labels, self.params, (int(seed[0]), salt))


def augment_batch(
    images: np.ndarray, labels: np.ndarray, params: AugmentParams, seed: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one batch: uint8 images (B, H, W, 3) and one-hot labels (B, C), NumPy in and out.

    A pure function of its arguments: the same seed (two integers) gives the same result on
    every run. The input arrays are never written to.
    """
    n, h, w = images.shape[:3]
    if params.is_identity or n == 0:
        return np.array(images, copy=True), np.array(labels, copy=True)
    key = np.array(seed, dtype=np.int64).view(np.uint64)
    rng = np.random.Generator(np.random.Philox(key=key))
    u = rng.random((n, _N_DRAWS + len(OPS) * 2))
    lam: np.ndarray = np.ones(n)
    if params.mix != "none":
        lam = np.asarray(rng.beta(params.mix_alpha, params.mix_alpha, n))
    ops = params.randaugment_ops if params.randaugment_active else 0
    # Every kernel sees an image as one flat row of H*W*3 values.
    x = np.ascontiguousarray(images, dtype=np.uint8).reshape(n, h * w * 3)
    out, perm, share = _augment(
        x,
        h,
        w,
        u,
        lam,
        ops,
        params.randaugment_magnitude,
        params.flip,
        params.rotate90,
        _MIXES.index(params.mix),
    )
    y = np.asarray(labels, np.float64)
    y = (1.0 - share)[:, None] * y + share[:, None] * y[perm]
    out = out.reshape(images.shape)
    if np.shares_memory(out, images):
        out = out.copy()
    return out, y.astype(labels.dtype)


@_jit
def _augment(x, h, w, u, lam, ops, magnitude, flip, rotate90, mix):  # type: ignore[no-untyped-def]
    """The whole batch: pixel ops, spatial ops (with CutMix), MixUp.

    Returns the images (x itself when nothing changed), each image's partner and the share
    of the partner in its label (CutMix: the pasted area; MixUp: 1 - lambda).
    """
    n = x.shape[0]
    strength = _strengths(u, ops, magnitude)
    if ops > 0:
        x = _pixel_stage(x, h, w, strength)
    geometry = _geometry(strength, u, flip, rotate90, h, w)
    perm = np.arange(n)
    box = np.zeros((n, 4), np.int64)
    share = np.zeros(n)
    if mix != 0:
        perm = np.argsort(u[:, _PERM], kind="mergesort")
    if mix == 2:  # CutMix: the partner pastes a box of area 1 - lambda, lambda ~ Beta
        for i in range(n):
            ratio = math.sqrt(1.0 - lam[i])
            side_h, side_w = round(ratio * h), round(ratio * w)
            _box(box[i], u[i, _MIX], u[i, _MIX + 1], side_h, side_w, h, w)
            share[i] = (box[i, 1] - box[i, 0]) * (box[i, 3] - box[i, 2]) / (h * w)
    if _moves(geometry, perm, box):
        x = _remap_stage(x, h, w, geometry, perm, box, _fold(w, 1), _fold(h, w))
    if mix == 1:
        x = _mixup_stage(x, perm, lam)
        share = 1.0 - lam
    return x, perm, share


@_jit
def _strengths(u, ops, magnitude):  # type: ignore[no-untyped-def]
    """(B, len(OPS)) signed strength of each op per image: magnitude where picked, else 0.

    An image picks the ``ops`` ops of highest score (distinct ops); the sign is drawn per op.
    """
    n, n_all = u.shape[0], _N_OPS
    strength = np.zeros((n, n_all))
    for i in range(n):
        order = np.argsort(-u[i, _N_DRAWS + n_all :], kind="mergesort")
        for r in range(ops):
            op = order[r]
            strength[i, op] = -magnitude if u[i, _N_DRAWS + op] < 0.5 else magnitude
    return strength


@_jit
def _pixel_hash(x):  # type: ignore[no-untyped-def]
    """A 63-bit hash of a flat uint8 array, for seeding: each 8-byte word, xor its position,
    is mixed and multiplied, the products summed (a loop that vectorizes), then finalised."""
    words = x.size // 8
    w = x[: 8 * words].view(np.uint64)
    golden = np.uint64(0x9E3779B97F4A7C15)
    acc = np.uint64(x.size)
    for k in range(words):
        v = w[k] ^ np.uint64(k)
        acc += (v ^ (v >> np.uint64(29))) * golden
    for k in range(8 * words, x.size):
        acc += (np.uint64(x[k]) + np.uint64(k)) * golden
    z = acc + golden  # splitmix64's finaliser
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.int64((z ^ (z >> np.uint64(31))) >> np.uint64(1))


# --- pixel ops ------------------------------------------------------------------------------

# The kernels below index flat rows with plain loop counters and take shifted neighbours as
# slices: an index such as k - row could be negative to Numba, and the check it then adds on
# every access keeps the loop from being vectorized.


@_jit
def _pixel_stage(x, h, w, strength):  # type: ignore[no-untyped-def]
    """The picked colour ops, sharpness, posterize and solarize of each image (a row of x).

    Returns x itself when no image has any of them, else a new array.
    """
    n, size = x.shape
    todo = np.zeros(n, np.bool_)
    for i in range(n):
        for op in range(1, 9):  # autocontrast .. solarize
            todo[i] = todo[i] or strength[i, op] != 0.0
    if not todo.any():
        return x
    out = np.empty_like(x)
    coloured = np.empty(size, np.uint8)
    planes = np.empty((6, size // 3), np.float32)
    column = np.empty(size, np.int32)
    for i in range(n):
        xi, oi, s = x[i], out[i], strength[i]
        if not todo[i]:
            _copy(oi, xi)
            continue
        sharp = np.float32(MAX_SHARPNESS * s[_SHARPNESS])
        # 1. colour, into oi (or into coloured, which sharpness reads)
        target = coloured if sharp != 0.0 else oi
        if s[_SATURATION] != 0.0 or s[_HUE] != 0.0:
            _colour_matrix(xi, target, _colour_map(s, xi, h, w).astype(np.float32), planes)
        elif s[_AUTOCONTRAST] != 0.0 or s[_BRIGHTNESS] != 0.0 or s[_CONTRAST] != 0.0:
            m = _colour_map(s, xi, h, w)
            _scale(xi, target, np.float32(m[0]), np.float32(m[9]))
        else:
            _copy(target, xi)
        # 2. sharpness
        if sharp != 0.0:
            _sharpen(coloured, oi, column, 3 * w, sharp)
        # 3. posterize, then solarize
        _bits(oi, s[_POSTERIZE], s[_SOLARIZE])
    return out


@_jit
def _colour_map(s, xi, h, w):  # type: ignore[no-untyped-def]
    """(10,): autocontrast, brightness, saturation, hue, contrast (strengths in s) as one map.

    y = x @ m + t per pixel, m (3x3, [input channel, output channel]) flattened in 0-8 and
    t (+ 0.5, for rounding) in 9. Saturation and hue keep grey grey, so the offset is the same
    for the three channels; the map is applied once, so only the end result is clipped. At
    zero strengths it is exactly m = I, t = 0.5.
    """
    ac, bright, con = s[_AUTOCONTRAST], s[_BRIGHTNESS], s[_CONTRAST]
    sat, hue = s[_SATURATION], s[_HUE]
    # Autocontrast: blend with the stretch of the image's [least, greatest] value to [0, 255].
    lo, hi = 0.0, 0.0
    if ac != 0.0:
        lo, hi = float(xi.min()), float(xi.max())
    span = hi - lo
    weight = abs(ac) if span > 0.0 else 0.0  # a flat image stays as it is
    stretch = 255.0 / max(span, 1.0)
    gain = (1.0 + weight * (stretch - 1.0)) * (1.0 + MAX_BRIGHTNESS * bright)
    shift = (weight * lo * stretch) * (-1.0 - MAX_BRIGHTNESS * bright)  # -w lo stretch (1 + b)
    f = 1.0 + MAX_SATURATION * sat
    theta = (2.0 * math.pi * MAX_HUE_TURNS) * hue
    cos, sin = math.cos(theta), math.sin(theta)
    coef = (f * cos, f * sin, f * (1.0 - cos), 1.0 - f)
    m = np.zeros((3, 3))
    for k in range(4):
        m += coef[k] * _COLOUR_BASIS[k]
    m *= gain
    # Contrast: (1 + c) y - c grey, grey = mean luma of y = x @ m + shift over the image
    # (the mean colour of an 8 x 8 grid of its pixels: a full mean costs more, for nothing).
    grey = shift
    if con != 0.0:
        mean = np.zeros(3)
        for gy in range(8):
            for gx in range(8):
                at = ((gy * h // 8 + h // 16) * w + gx * w // 8 + w // 16) * 3
                for ch in range(3):
                    mean[ch] += xi[at + ch] / 64.0
        for ch in range(3):
            for d in range(3):
                grey += mean[ch] * m[ch, d] * _LUMA[d]
    c = MAX_CONTRAST * con
    out = np.empty(10)
    out[:9] = m.ravel() * (1.0 + c)
    out[9] = (1.0 + c) * shift - c * grey + 0.5
    return out


@_jit
def _to_uint8(v):  # type: ignore[no-untyped-def]
    """Clip to [0, 255] and truncate: the ops add 0.5 first, so this rounds half up."""
    return np.uint8(min(max(v, 0.0), 255.0))


@_jit
def _copy(dst, src):  # type: ignore[no-untyped-def]
    """dst[:] = src for uint8 rows whose length is a multiple of 8, eight bytes at a time."""
    if dst.size % 8 == 0:
        dst.view(np.uint64)[:] = src.view(np.uint64)
    else:
        dst[:] = src


@_jit
def _scale(xi, target, gain, offset):  # type: ignore[no-untyped-def]
    """target = uint8(x gain + offset), clipped: a colour map that treats channels alike."""
    lo, hi = np.float32(0.0), np.float32(255.0)
    for k in range(xi.size):
        target[k] = np.uint8(min(max(np.float32(xi[k]) * gain + offset, lo), hi))


@_jit
def _bits(x, posterize, solarize):  # type: ignore[no-untyped-def]
    """In place: posterize clears the low round(4 |p|) bits, then solarize inverts (255 - v)
    the values at or above ceil(256 - 128 |s|). Either is the identity at strength 0."""
    drop = round(MAX_POSTERIZE_BITS * abs(posterize))
    threshold = math.ceil(256.0 - MAX_SOLARIZE * abs(solarize))
    if drop == 0 and threshold > 255:
        return
    mask = np.int32(256 - (1 << drop))
    for k in range(x.size):
        v = np.int32(x[k]) & mask
        x[k] = np.uint8(255 - v if v >= threshold else v)


@_jit
def _colour_matrix(xi, target, m, planes):  # type: ignore[no-untyped-def]
    """target = uint8(x @ m[:9] as 3x3 + m[9]) per pixel, through float32 colour planes."""
    pixels = xi.size // 3
    r, g, b = planes[0], planes[1], planes[2]
    for p in range(pixels):
        r[p], g[p], b[p] = xi[3 * p], xi[3 * p + 1], xi[3 * p + 2]
    lo, hi = np.float32(0.0), np.float32(255.0)
    for d in range(3):
        out = planes[3 + d]
        m_r, m_g, m_b, t = m[d], m[3 + d], m[6 + d], m[9]
        for p in range(pixels):
            out[p] = min(max(r[p] * m_r + g[p] * m_g + b[p] * m_b + t, lo), hi)
    for p in range(pixels):
        target[3 * p] = np.uint8(planes[3, p])
        target[3 * p + 1] = np.uint8(planes[4, p])
        target[3 * p + 2] = np.uint8(planes[5, p])


@_jit
def _sharpen(c, out, column, row, s):  # type: ignore[no-untyped-def]
    """Blend with PIL's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13), factor s:
    y = x + s (x - smooth(x)) = x + s (9 x - box3x3(x)) / 13; the border pixels are kept, as
    PIL keeps them. c: the image (flat, rows of ``row`` values); out receives y."""
    size = c.size
    _copy(out, c)
    m = size - 2 * row
    above, middle, below, sums = c[:m], c[row : row + m], c[2 * row :], column[row : row + m]
    for k in range(m):  # vertical sums of three
        sums[k] = np.int32(above[k]) + np.int32(middle[k]) + np.int32(below[k])
    half, nine, f = np.float32(0.5), np.float32(9.0), s / np.float32(13.0)
    lo, hi = np.float32(0.0), np.float32(255.0)
    inner = row - 6  # the values of a row but its first and last pixel
    for k0 in range(row, size - row, row):
        left, centre, right = (
            column[k0 : k0 + inner],
            column[k0 + 3 : k0 + 3 + inner],
            column[k0 + 6 : k0 + 6 + inner],
        )
        v_in, v_out = c[k0 + 3 : k0 + 3 + inner], out[k0 + 3 : k0 + 3 + inner]
        for k in range(inner):
            box = np.float32(left[k] + centre[k] + right[k])
            v = np.float32(v_in[k])
            v_out[k] = np.uint8(min(max(v + half + f * (nine * v - box), lo), hi))


# --- spatial ops: one source pixel per output pixel -----------------------------------------


@_jit
def _geometry(strength, u, flip, rotate90, h, w):  # type: ignore[no-untyped-def]
    """(B, 10) per image: the map from output to source pixel, and the cutout box.

    Columns a, b, c, d, e, f, y0, y1, x0, x1: source x = a X + b Y + e, y = c X + d Y + f
    for output pixel (X, Y), shifted by +0.5 for rounding. Rotation, shear and translation
    act about the image centre; flips and 90-degree turns have exact 0 / +-1 entries.
    """
    n = u.shape[0]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    g = np.zeros((n, 10))
    lin = np.empty((2, 2))
    for i in range(n):
        s = strength[i]
        theta = s[_ROTATE] * (MAX_ROTATE_DEGREES * math.pi / 180.0)
        cos, sin = math.cos(theta), math.sin(theta)
        shear = MAX_SHEAR * s[_SHEAR]
        sx = shear if u[i, _AXIS] < 0.5 else 0.0  # shear along x or along y
        sy = shear - sx  # rotation @ [[1, sx], [sy, 1]]:
        lin[0, 0], lin[0, 1] = cos - sin * sy, cos * sx - sin
        lin[1, 0], lin[1, 1] = sin + cos * sy, sin * sx + cos
        phi = 2.0 * math.pi * u[i, _DIRECTION]
        dist = MAX_TRANSLATE * abs(s[_TRANSLATE])
        dx, dy = math.cos(phi) * dist * w, math.cos(phi - math.pi / 2) * dist * h
        side = round((MAX_CUTOUT * h) * abs(s[_CUTOUT]))
        _box(g[i, 6:], u[i, _CUT], u[i, _CUT + 1], side, side, h, w)
        if rotate90 or flip:
            turn = _DIHEDRAL_TURNS[math.floor(u[i, _ROT90] * 4.0) if rotate90 else 0].copy()
            if flip:  # flip the x and y rows
                for r in range(2):
                    if u[i, _FLIP + r] < 0.5:
                        turn[r] = -turn[r]
            lin = np.array(
                [
                    [
                        turn[0, 0] * lin[0, 0] + turn[0, 1] * lin[1, 0],
                        turn[0, 0] * lin[0, 1] + turn[0, 1] * lin[1, 1],
                    ],
                    [
                        turn[1, 0] * lin[0, 0] + turn[1, 1] * lin[1, 0],
                        turn[1, 0] * lin[0, 1] + turn[1, 1] * lin[1, 1],
                    ],
                ]
            )
        g[i, 0], g[i, 1], g[i, 2], g[i, 3] = lin[0, 0], lin[0, 1], lin[1, 0], lin[1, 1]
        g[i, 4] = (cx + 0.5) + dx - (lin[0, 0] * cx + lin[0, 1] * cy)
        g[i, 5] = (cy + 0.5) + dy - (lin[1, 0] * cx + lin[1, 1] * cy)
    return g


@_jit
def _box(out, where_y, where_x, side_h, side_w, h, w):  # type: ignore[no-untyped-def]
    """out[:] = [y0, y1, x0, x1]: a box of the given sides centred at (where_y H, where_x W),
    clipped to the image."""
    y = math.floor(where_y * h) - side_h // 2
    x = math.floor(where_x * w) - side_w // 2
    out[0], out[1] = min(max(y, 0), h), min(max(y + side_h, 0), h)
    out[2], out[3] = min(max(x, 0), w), min(max(x + side_w, 0), w)


@_jit
def _moves(geometry, perm, box):  # type: ignore[no-untyped-def]
    """Whether any pixel moves: a map other than the identity, a cutout or a pasted box."""
    for i in range(geometry.shape[0]):
        g = geometry[i]
        if g[0] != 1.0 or g[1] != 0.0 or g[2] != 0.0 or g[3] != 1.0 or g[4] != 0.5 or g[5] != 0.5:
            return True
        if g[6] < g[7] and g[8] < g[9]:
            return True
        if perm[i] != i and box[i, 0] < box[i, 1] and box[i, 2] < box[i, 3]:
            return True
    return False


@_jit
def _fold(n, scale):  # type: ignore[no-untyped-def]
    """scale * the pixel index of each integer coordinate -n .. 2n - 1 (pixel i spans [i, i + 1)),
    reflected into [0, n) about the edges: d c b a | a b c d | d c b a. Unsigned: see above."""
    fold = np.empty(3 * n, np.uint64)
    for k in range(3 * n):
        i = k - n
        if i < 0:
            i = -1 - i
        elif i >= n:
            i = 2 * n - 1 - i
        fold[k] = scale * i
    return fold


_FRACTION = 16  # the source coordinates are fixed-point integers with 16 fractional bits


@_jit
def _reflect(v, fold, n):  # type: ignore[no-untyped-def]
    """fold[floor(v) + n] for a fixed-point coordinate v: its (scaled) reflected pixel index.

    The strongest rotate + shear + translate keeps coordinates within (-n, 2n) (within about
    (-0.5 n, 1.5 n)); beyond, the last entries repeat.
    """
    return fold[min(max((v >> _FRACTION) + n, 0), 3 * n - 1)]


@_jit
def _remap_stage(x, h, w, geometry, perm, box, fold_x, fold_y):  # type: ignore[no-untyped-def]
    """out[i] at (X, Y) = x[j] at the source of (X, Y) under j's map, where j = perm[i] inside
    i's CutMix box and i elsewhere; j's cutout box takes j's background colour (the mean of
    its four corners). x: (n, H*W*3) uint8; geometry as ``_geometry``; box (n, 4) int;
    fold_x = ``_fold(w, 1)``, fold_y = ``_fold(h, w)``.
    """
    n = x.shape[0]
    out = np.empty_like(x)
    # The source of (X, Y) is x = a X + b Y + e, y = c X + d Y + f in fixed point (exact
    # integer arithmetic: the same pixels however it is evaluated; flips, 90-degree turns
    # and the identity have exact coefficients). With b = c = 0 or a = d = 0 (no rotation but
    # by 90 degrees, no shear) each source coordinate depends on one output axis: a table per
    # axis. Otherwise, row by row, stepping X by adding a and c.
    by_x = np.empty(w, np.uint64)
    by_y = np.empty(h, np.uint64)
    one = 1 << _FRACTION
    coef = np.empty(6, np.int64)
    for i in range(n):
        xi, oi = x[i].reshape((h * w, 3)), out[i].reshape((h * w, 3))
        for k in range(6):
            coef[k] = round(geometry[i, k] * one)
        a, b, c, d, e, f = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5]
        if a == one and b == 0 and c == 0 and d == one and e == one // 2 and f == one // 2:
            _copy(out[i], x[i])
        elif (b == 0 and c == 0) or (a == 0 and d == 0):
            for xx in range(w):
                by_x[xx] = (
                    _reflect(a * xx + e, fold_x, w) if b == 0 else _reflect(c * xx + f, fold_y, h)
                )
            for yy in range(h):
                by_y[yy] = (
                    _reflect(d * yy + f, fold_y, h) if b == 0 else _reflect(b * yy + e, fold_x, w)
                )
            for yy in range(h):
                base, o = by_y[yy], oi[yy * w : (yy + 1) * w]
                for xx in range(w):
                    src = base + by_x[xx]
                    o[xx, 0], o[xx, 1], o[xx, 2] = xi[src, 0], xi[src, 1], xi[src, 2]
        else:
            # The map is affine, so its extremes are at the corners: when they stay within
            # (-n, 2n), no pixel needs the clamp of _reflect.
            inside = True
            for cy in (0, h - 1):
                for cx in (0, w - 1):
                    sx = (a * cx + b * cy + e) >> _FRACTION
                    sy = (c * cx + d * cy + f) >> _FRACTION
                    inside = inside and -w <= sx < 2 * w and -h <= sy < 2 * h
            for yy in range(h):
                sx, sy, o = b * yy + e, d * yy + f, oi[yy * w : (yy + 1) * w]
                if inside:  # unsigned indices: no negative-index check
                    for xx in range(w):
                        src = (
                            fold_y[np.uint64((sy >> _FRACTION) + h)]
                            + fold_x[np.uint64((sx >> _FRACTION) + w)]
                        )
                        o[xx, 0], o[xx, 1], o[xx, 2] = xi[src, 0], xi[src, 1], xi[src, 2]
                        sx += a
                        sy += c
                else:
                    for xx in range(w):
                        src = _reflect(sy, fold_y, h) + _reflect(sx, fold_x, w)
                        o[xx, 0], o[xx, 1], o[xx, 2] = xi[src, 0], xi[src, 1], xi[src, 2]
                        sx += a
                        sy += c
        y0, y1, x0, x1 = (
            int(geometry[i, 6]),
            int(geometry[i, 7]),
            int(geometry[i, 8]),
            int(geometry[i, 9]),
        )
        if y0 < y1 and x0 < x1:  # cutout: the background colour of the source image
            colour = np.empty(3, np.uint8)
            for ch in range(3):
                corners = (
                    float(xi[0, ch])
                    + float(xi[w - 1, ch])
                    + float(xi[(h - 1) * w, ch])
                    + float(xi[h * w - 1, ch])
                )
                colour[ch] = _to_uint8(corners / 4.0 + 0.5)
            for yy in range(y0, y1):
                oi[yy * w + x0 : yy * w + x1, :] = colour
    pasted = False
    for i in range(n):
        pasted = pasted or (perm[i] != i and box[i, 0] < box[i, 1] and box[i, 2] < box[i, 3])
    if not pasted:
        return out
    mixed = out.copy()  # CutMix: paste from the partners' results, before any pasting
    row = 3 * w
    for i in range(n):
        j = perm[i]
        for yy in range(box[i, 0], box[i, 1]):
            start, stop = yy * row + 3 * box[i, 2], yy * row + 3 * box[i, 3]
            mixed[i, start:stop] = out[j, start:stop]
    return mixed


# --- MixUp ----------------------------------------------------------------------------------


@_jit
def _mixup_stage(x, perm, lam):  # type: ignore[no-untyped-def]
    """Blend each image (a row of x) with its partner perm[i]: lam x + (1 - lam) x[perm]."""
    n, size = x.shape
    out = np.empty_like(x)
    half, lo, hi = np.float32(0.5), np.float32(0.0), np.float32(255.0)
    for i in range(n):
        xi, xj, oi = x[i], x[perm[i]], out[i]
        other = np.float32(1.0 - lam[i])
        for k in range(size):
            v = np.float32(xi[k])
            oi[k] = np.uint8(min(max(v + half + other * (np.float32(xj[k]) - v), lo), hi))
    return out
