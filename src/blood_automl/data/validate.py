"""Checks and conversions of raw arrays into RGB uint8 images, int64 labels and class names."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from blood_automl.data.dataset import PBC_CLASS_NAMES
from blood_automl.errors import ConfigError, DataError

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 1024


def fail(where: str, problem: str, fix: str) -> DataError:
    """A one-line DataError: ``where: problem; fix``."""
    message = f"{where}: {problem}; {fix}"
    return DataError(" ".join(message.split()))


def check_image_size(image_size: int) -> int:
    """Return ``image_size`` if it is a sensible side length, else raise ConfigError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ConfigError(f"image size must be an integer, but got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"image size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], but got {image_size}; "
            "use --image-size 96 (the PBC course size) or another value in range"
        )
    return int(image_size)


def _first_bad(mask: np.ndarray) -> int:
    """Index of the first image (axis 0) where ``mask`` is true anywhere."""
    flat = mask.reshape(mask.shape[0], -1).any(axis=1)
    return int(np.argmax(flat))


UNIT_MAX = 1.0
"""A float image whose values all lie in [0, UNIT_MAX] is read as a [0, 1] image."""
BYTE_MIN_PEAK = 2.0
"""A float image is read as [0, 255] only if its largest value is above this..."""
BYTE_MIN_SHARE = 0.5
"""...and more than this share of its non-zero values are above 1."""
MIN_SIDE_FRACTION = 4
"""Images with a side shorter than ``image_size / MIN_SIDE_FRACTION`` are refused."""
MAX_ASPECT = 2.0
"""Images longer than ``MAX_ASPECT`` times their width (or the other way round) are refused."""
SIXTEEN_BIT_MAX = 65535


def _float_to_uint8(images: np.ndarray, where: str, key: str) -> tuple[np.ndarray, str]:
    """Read a finite float array in [0, 255] as [0, 1] or [0, 255] images, refusing doubt.

    Per image: *unit* when every value is at most 1; *byte* when its largest value is above
    2 and more than half of its non-zero values are above 1; all-black images are either.
    The array must be all unit or all byte: anything else (a stray value above 1 in
    [0, 1] images, images in [0, 1.5], a mix of both scales) is refused with the counts.
    """
    n = images.shape[0]
    flat = images.reshape(n, -1)
    peak = flat.max(axis=1)
    if float(peak.max()) <= UNIT_MAX:
        scaled = np.rint(images * 255.0).astype(np.uint8)
        return scaled, f"scaled {n} float images from [0, 1] to 0..255 (uint8)"
    above = (flat > UNIT_MAX).sum(axis=1)
    nonzero = np.count_nonzero(flat, axis=1)
    black = peak == 0
    unit = (peak <= UNIT_MAX) & ~black
    byte = (peak > BYTE_MIN_PEAK) & (above > BYTE_MIN_SHARE * nonzero)
    odd = ~(black | unit | byte)
    fix = "scale every image to [0, 1] or every image to [0, 255], or save them as uint8"
    if odd.any():
        i = int(np.argmax(odd))
        raise fail(
            where,
            f"'{key}' is a float array whose scale is ambiguous: {int(odd.sum())} image(s) are "
            f"neither in [0, 1] nor clearly in [0, 255] (e.g. image {i}: largest value "
            f"{float(peak[i]):g}, {int(above[i])} of its {int(nonzero[i])} non-zero values "
            f"above 1), while {int(unit.sum())} image(s) lie in [0, 1]",
            fix,
        )
    if unit.any():
        i, j = int(np.argmax(unit)), int(np.argmax(byte))
        raise fail(
            where,
            f"'{key}' mixes two scales: {int(unit.sum())} float image(s) lie in [0, 1] (e.g. "
            f"image {i}) and {int(byte.sum())} reach up to 255 (e.g. image {j}, largest value "
            f"{float(peak[j]):g})",
            fix,
        )
    return np.rint(images).astype(np.uint8), f"rounded {n} float images in [0, 255] to uint8"


def scale_16bit(values: np.ndarray) -> np.ndarray:
    """Map 16-bit values 0..65535 onto 0..255 (round(v * 255 / 65535)) as uint8."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + SIXTEEN_BIT_MAX // 2) // SIXTEEN_BIT_MAX).astype(np.uint8)


def sixteen_bit_note(n: int, peak: int) -> str:
    """The note saying how ``n`` 16-bit images were brought to 8 bits."""
    note = (
        f"scaled {n} 16-bit images to 8 bits over the full 16-bit range "
        f"(0..65535 -> 0..255; largest value found {peak})"
    )
    if peak < 4096:
        note += (
            ": the values stay below 4096 (12-bit data?), so the images come out dark; "
            "rescale them to 0..255 yourself to use the full 8-bit range"
        )
    return note


def _to_uint8(images: np.ndarray, where: str, *, key: str, convert: bool) -> tuple[np.ndarray, str]:
    """Bring a non-uint8 pixel array to uint8, or refuse it when its meaning is unclear."""
    lo, hi = float(images.min()), float(images.max())
    if images.dtype == np.uint16 and hi > 255:
        if not convert:
            raise fail(
                where,
                f"'{key}' holds 16-bit pixel values (dtype uint16, up to {hi:g}), "
                "but blood-automl needs 8-bit ones",
                "pass --convert (convert=True) to scale the full 16-bit range 0..65535 to "
                "0..255, or save the images as uint8",
            )
        return scale_16bit(images), sixteen_bit_note(images.shape[0], int(hi))
    if lo < 0 or hi > 255:
        i = _first_bad((images < 0) | (images > 255))
        bad = lo if lo < 0 else hi
        raise fail(
            where,
            f"'{key}' must hold pixel values in [0, 255], but got {bad:g} in image {i}",
            "rescale the images to 0..255 and save them as uint8",
        )
    if images.dtype.kind == "f":
        return _float_to_uint8(images, where, key)
    n = images.shape[0]
    return images.astype(np.uint8), f"converted {n} images from {images.dtype} to uint8"


def geometry_problem(width: int, height: int, image_size: int) -> str | None:
    """Why a ``width`` x ``height`` image cannot honestly become ``image_size`` square, or None.

    Refused: an aspect ratio above :data:`MAX_ASPECT` (the centre crop would keep less than
    half of the picture) and a side shorter than ``image_size / MIN_SIDE_FRACTION`` (more
    than a 4x enlargement invents the picture).
    """
    short, long = min(width, height), max(width, height)
    if long > MAX_ASPECT * short:
        return f"aspect ratio {round(long / short, 2):g}:1 (more than {MAX_ASPECT:g}:1)"
    if short * MIN_SIDE_FRACTION < image_size:
        return f"smaller than a quarter of --image-size {image_size}"
    return None


def geometry_fix(image_size: int) -> str:
    """How to fix images refused by :func:`geometry_problem`."""
    need = -(-image_size // MIN_SIDE_FRACTION)
    return (
        f"crop or pad the images to (near) square, at most {MAX_ASPECT:g}:1, with sides of at "
        f"least {need} px for --image-size {image_size} (or choose a smaller --image-size)"
    )


def check_geometry(images: np.ndarray, image_size: int, where: str, key: str = "images") -> None:
    """Refuse an (N, H, W[, C]) array whose images are too small or too long for ``image_size``."""
    h, w = int(images.shape[1]), int(images.shape[2])
    problem = geometry_problem(w, h, image_size)
    if problem is not None:
        raise fail(
            where,
            f"all {images.shape[0]} images in '{key}' are {w}x{h}: {problem}",
            geometry_fix(image_size),
        )


def name_key(name: str) -> str:
    """A class name folded for comparison: case, spaces, underscores and hyphens ignored."""
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())


def check_distinct_names(names: Sequence[str], where: str, what: str, fix: str) -> None:
    """Refuse class names that differ only by case, spaces, underscores or hyphens."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name_key(name), []).append(name)
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        shown = "; ".join(", ".join(repr(n) for n in g) for g in clashes[:3])
        raise fail(
            where,
            f"{what} {shown} differ only in case, spaces, underscores or hyphens, so one "
            "class would be split into several",
            fix,
        )


def to_rgb_uint8(
    images: np.ndarray, where: str, *, convert: bool, key: str = "images"
) -> tuple[np.ndarray, list[str]]:
    """Check an image array and return it as (N, H, W, 3) uint8, with notes on any conversion.

    Accepts uint8; other integer types and floats are accepted when their values are
    pixel values: floats are read as [0, 1] or [0, 255] images only when that is clear
    (see :func:`_float_to_uint8`), and uint16 values above 255 are scaled from the full
    16-bit range, only with ``convert``. Grayscale (N, H, W) or (N, H, W, 1) and RGBA
    (N, H, W, 4) are converted only when ``convert`` is true.
    """
    notes: list[str] = []
    kind = images.dtype.kind
    if kind not in "uif":
        raise fail(
            where,
            f"'{key}' must hold uint8 pixel values, but has dtype {images.dtype}",
            f"save it as uint8, e.g. np.savez(path, {key}={key}.astype(np.uint8), ...)",
        )
    if images.ndim not in (3, 4):
        raise fail(
            where,
            f"'{key}' must be a 4-D array (N, H, W, 3), but has shape {images.shape}",
            "save one RGB image per row of the array",
        )
    if images.shape[0] == 0:
        raise fail(where, f"the data set is empty ('{key}' has shape {images.shape})", "add images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise fail(where, f"'{key}' has empty images (shape {images.shape})", "save real images")
    channels = 1 if images.ndim == 3 else images.shape[3]
    if channels not in (1, 3, 4):
        raise fail(
            where,
            f"'{key}' must have 3 colour channels (N, H, W, 3), but has {channels} (shape {images.shape})",
            "save RGB images",
        )
    if channels in (1, 4) and not convert:
        what = "grayscale" if channels == 1 else "RGBA"
        how = "copy the grey channel to R, G and B" if channels == 1 else "drop the alpha channel"
        raise fail(
            where,
            f"'{key}' are {what} images (shape {images.shape}), but blood-automl needs RGB",
            f"pass --convert (convert=True) to {how}, or save RGB images",
        )

    if kind == "f":
        finite = np.isfinite(images)
        if not finite.all():
            i = _first_bad(~finite)
            bad = images[i][~finite[i]].flat[0]
            raise fail(
                where,
                f"'{key}' holds a non-finite value ({bad}) in image {i}",
                "fix or drop the images with NaN or infinite pixels",
            )
    if images.dtype != np.uint8:
        images, note = _to_uint8(images, where, key=key, convert=convert)
        notes.append(note)

    if images.ndim == 3:
        images = images[..., None]
    if channels == 1:
        images = np.repeat(images, 3, axis=3)
        notes.append(f"converted {images.shape[0]} grayscale images to RGB")
    elif channels == 4:
        images = np.ascontiguousarray(images[..., :3])
        notes.append(f"dropped the alpha channel of {images.shape[0]} RGBA images")
    return images, notes


def resize_images(images: np.ndarray, image_size: int) -> tuple[np.ndarray, list[str]]:
    """Resize (N, H, W, 3) uint8 images to ``image_size`` square with Lanczos (anti-aliased).

    Non-square images are centre-cropped to a square first. Returns the images and a note.
    """
    n, h, w = images.shape[:3]
    if h == image_size and w == image_size:
        return images, []
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = resize_one(images[i], image_size)
    crop = f", centre-cropped to {min(h, w)}x{min(h, w)} first" if h != w else ""
    note = f"resized {n} images from {w}x{h} to {image_size}x{image_size} (Lanczos{crop})"
    return out, [note]


def resize_one(image: np.ndarray, image_size: int) -> np.ndarray:
    """Centre-crop one (H, W, 3) uint8 image to a square and resize it with Lanczos."""
    h, w = image.shape[:2]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
    if image.shape[0] == image_size:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((image_size, image_size), Image.Resampling.LANCZOS))


def _names_from_array(class_names: np.ndarray, where: str) -> tuple[str, ...]:
    if class_names.dtype.kind not in "US" or class_names.ndim != 1:
        raise fail(
            where,
            f"'class_names' must be a 1-D array of strings, but has dtype {class_names.dtype} "
            f"and shape {class_names.shape}",
            "save e.g. class_names=np.array(['basophil', 'eosinophil', ...])",
        )
    names = tuple(
        (n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)).strip()
        for n in class_names.tolist()
    )
    if len(names) < 2:
        raise fail(
            where,
            f"'class_names' must name at least 2 classes, but has {len(names)}",
            "name every class",
        )
    if any(not n for n in names):
        raise fail(
            where,
            f"'class_names' holds an empty name at index {names.index('')}",
            "name every class",
        )
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise fail(
                where,
                f"'class_names' repeats '{n}' at index {i}",
                "give each class one unique name",
            )
        seen.add(n)
    check_distinct_names(
        names,
        where,
        "'class_names'",
        "give each class one name (one spelling) in class_names",
    )
    return names


def to_labels(
    labels: np.ndarray,
    n_images: int,
    where: str,
    *,
    class_names: np.ndarray | None = None,
    key: str = "labels",
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """Check labels and return them as (N,) int64 class indices, the class names and notes.

    Labels may be integers (or integral floats) indexing ``class_names``, or class-name
    strings. Without ``class_names``, integer labels must be in [0, 8) and mean the 8 PBC
    classes; string labels name their classes, sorted.
    """
    notes: list[str] = []
    labels = _one_label_per_image(labels, n_images, where, key)
    names = _names_from_array(class_names, where) if class_names is not None else None
    if labels.dtype.kind in "US":
        text = _label_strings(labels)
        if not _digit_strings(text, where, key):
            out, names = _indices_of_names(text, names, where, key)
            return out, names, notes
        labels = np.array([int(t) for t in text], dtype=np.int64)
        notes.append(f"read '{key}' from digit strings as integers")
    elif labels.dtype.kind == "f":
        labels = _integral_floats(labels, where, key)
        notes.append(f"read float '{key}' as integers")
    return _class_indices(labels, names, where, key, notes)


def _one_label_per_image(labels: np.ndarray, n_images: int, where: str, key: str) -> np.ndarray:
    """The labels as one (N,) column, N the number of images; (N, 1) is flattened."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise fail(
            where,
            f"'{key}' must have shape (N,) or (N, 1), but has shape {labels.shape}",
            "save one integer label or class name per image (for one-hot labels save labels.argmax(1))",
        )
    if labels.shape[0] != n_images:
        raise fail(
            where,
            f"there are {n_images} images but {labels.shape[0]} labels in '{key}' (length mismatch)",
            "save exactly one label per image",
        )
    return labels


def _label_strings(labels: np.ndarray) -> list[str]:
    """String or bytes labels as stripped text (bytes read as UTF-8)."""
    return [
        (s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)).strip()
        for s in labels.tolist()
    ]


def _digit_strings(text: list[str], where: str, key: str) -> bool:
    """Whether every label is an integer in digits (False: all are names; a mix is refused)."""
    numeric = [t.lstrip("-").isdecimal() for t in text]
    if all(numeric):
        return True
    if any(numeric):
        i, j = numeric.index(True), numeric.index(False)
        raise fail(
            where,
            f"'{key}' mixes integers and names ('{text[i]}' at index {i}, '{text[j]}' at index {j})",
            "use either integer labels or class names, not both",
        )
    return False


def _names_of_labels(text: list[str], where: str, key: str) -> tuple[str, ...]:
    """The classes that name labels name, sorted: at least 2, each spelled one way."""
    names = tuple(sorted(set(text)))
    check_distinct_names(
        names,
        where,
        f"the labels in '{key}'",
        "spell each class one way in the labels (e.g. all lower case)",
    )
    if len(names) < 2:
        raise fail(
            where,
            f"'{key}' names only one class ('{names[0]}')",
            "a classifier needs images of at least 2 classes",
        )
    return names


def _indices_of_names(
    text: list[str], names: tuple[str, ...] | None, where: str, key: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class-name labels as indices into ``names`` (by default the names the labels use)."""
    if names is None:
        names = _names_of_labels(text, where, key)
    lookup = {n: k for k, n in enumerate(names)}
    out = np.empty(len(text), dtype=np.int64)
    for i, t in enumerate(text):
        if t not in lookup:
            raise fail(
                where,
                f"label '{t}' at index {i} is not one of class_names ({', '.join(names)})",
                "fix the label or add the class to class_names",
            )
        out[i] = lookup[t]
    return out, names


def _integral_floats(labels: np.ndarray, where: str, key: str) -> np.ndarray:
    """Float labels as int64, refused unless every one is a finite whole number."""
    finite = np.isfinite(labels)
    if not finite.all():
        i = int(np.argmin(finite))
        raise fail(
            where,
            f"'{key}' must be integers, but got {labels[i]} at index {i}",
            "fix that label",
        )
    frac = labels != np.round(labels)
    if frac.any():
        i = int(np.argmax(frac))
        raise fail(
            where,
            f"'{key}' must be integers, but got {labels[i]:g} at index {i}",
            "save integer class indices",
        )
    return labels.astype(np.int64)


def _class_indices(
    labels: np.ndarray, names: tuple[str, ...] | None, where: str, key: str, notes: list[str]
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """Integer labels checked against the classes (without names: the 8 PBC classes)."""
    if labels.dtype.kind not in "iu":
        raise fail(
            where,
            f"'{key}' must be integers or class-name strings, but has dtype {labels.dtype}",
            "save integer class indices or class names",
        )
    labels = labels.astype(np.int64, copy=False)
    assumed = names is None
    names = PBC_CLASS_NAMES if names is None else names
    k = len(names)
    bad = (labels < 0) | (labels >= k)
    if bad.any():
        i = int(np.argmax(bad))
        fix = (
            "add a 'class_names' array naming every class, or fix the labels"
            if assumed
            else "fix the labels or add the missing names to class_names"
        )
        raise fail(
            where, f"labels must be integers in [0, {k}), but got {labels[i]} at index {i}", fix
        )
    if assumed:
        notes.append("no class_names given: integer labels 0..7 read as the 8 PBC classes")
    return np.ascontiguousarray(labels, dtype=np.int64), names, notes
