"""Image files: the one decoder of data loading and prediction, its tally of problems and notes."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from blood_automl.data.validate import (
    fail,
    geometry_fix,
    geometry_problem,
    scale_16bit,
    sixteen_bit_note,
    to_rgb_uint8,
)
from blood_automl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name endings read from class folders (case-insensitive)."""

_NEEDS_CONVERT_MODES = {
    "L",
    "1",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "F",
    "LA",
    "La",
    "RGBA",
    "RGBa",
    "PA",
    "I;16N",
}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is (``a FIFO (named pipe)``, ...), or None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in _SPECIAL_KINDS:
        if test(mode):
            return what
    return "not a regular file"


class ImageTally:
    """What reading the image files of a folder found: problems and conversions."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.needs_convert: list[tuple[str, str]] = []
        self.geometry: list[str] = []
        self.scale: list[str] = []
        self.sizes: set[tuple[int, int]] = set()
        self.converted = self.sixteen = self.floats = self.resized = 0
        self.peak16 = 0


def _rgb_array(im: Image.Image, rel: str, tally: ImageTally) -> np.ndarray | None:
    """One loaded image as (H, W, 3) uint8, 16-bit and float images scaled, else None."""
    if im.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(im)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            tally.scale.append(f"{rel} (mode {im.mode}, values {lo}..{hi} outside 0..65535)")
            return None
        tally.sixteen += 1
        tally.peak16 = max(tally.peak16, hi)
        grey = scale_16bit(values)
    elif im.mode == "F":
        try:
            grey, _ = to_rgb_uint8(np.asarray(im, dtype=np.float64)[None], rel, convert=True)
        except DataError as exc:
            tally.scale.append(str(exc).split(";")[0])
            return None
        tally.floats += 1
        return grey[0]
    elif im.mode != "RGB":
        tally.converted += 1
        return np.asarray(im.convert("RGB"))
    else:
        return np.asarray(im)
    return np.repeat(grey[..., None], 3, axis=2)


def decode_image(
    f: Path, rel: str, *, convert: bool, tally: ImageTally, image_size: int | None = None
) -> np.ndarray | None:
    """Read one image file as (H, W, 3) uint8 at its own size, or note in ``tally`` why not.

    16-bit and float images are scaled (see :func:`_rgb_array`); grayscale, alpha and 16-bit
    images need ``convert``. With ``image_size``, images too small or too long to become
    that size are refused. An image above Pillow's decompression-bomb limit (about 89
    million pixels) is refused (its warning raised as an error) rather than decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(f)
        with im:
            im.load()
            if im.mode in _NEEDS_CONVERT_MODES and not convert:
                tally.needs_convert.append((rel, im.mode))
                return None
            w, h = im.size
            problem = None if image_size is None else geometry_problem(w, h, image_size)
            if problem is not None:
                tally.geometry.append(f"{rel} ({w}x{h}, {problem})")
                return None
            tally.sizes.add(im.size)
            return _rgb_array(im, rel, tally)
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        tally.bad.append(f"{rel} ({type(exc).__name__}: {first})")
        return None


def read_image_file(
    path: Path, rel: str, *, convert: bool, tally: ImageTally, image_size: int | None = None
) -> np.ndarray | None:
    """Read one image file as (H, W, 3) uint8 (see :func:`decode_image`), or note why not.

    A FIFO, device or socket named like an image is refused before it is opened (opening a
    FIFO blocks until a writer comes, a device like /dev/zero never ends).
    """
    try:
        mode: int | None = os.stat(path).st_mode
    except OSError:
        mode = None  # missing or unreadable: decoding notes it
    what = None if mode is None else special_kind(mode)
    if what is not None:
        raise fail(rel, f"is {what}, not an image file", "give a regular image file in its place")
    return decode_image(path, rel, convert=convert, tally=tally, image_size=image_size)


def _listed(items: list[str]) -> str:
    return "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")


def refuse_image_problems(where: str, tally: ImageTally, image_size: int) -> None:
    """Raise the first problem the folder's images have, naming the first few files."""
    if tally.bad:
        raise fail(
            where,
            f"{len(tally.bad)} image file(s) cannot be read: {_listed(tally.bad)}",
            "remove or replace those files",
        )
    sixteen = [(rel, mode) for rel, mode in tally.needs_convert if mode in _SIXTEEN_BIT_MODES]
    if sixteen:
        rel, mode = sixteen[0]
        raise fail(
            where,
            f"{len(sixteen)} image(s) are 16-bit (e.g. {rel}, mode {mode}), "
            "but blood-automl needs 8-bit RGB",
            "pass --convert (convert=True) to scale the full 16-bit range 0..65535 to 0..255 "
            "and make them RGB, or save 8-bit RGB images",
        )
    if tally.needs_convert:
        rel, mode = tally.needs_convert[0]
        raise fail(
            where,
            f"{len(tally.needs_convert)} image(s) are grayscale or have an alpha channel "
            f"(e.g. {rel}, mode {mode}), but blood-automl needs RGB",
            "pass --convert (convert=True) to convert them to RGB, or save RGB images",
        )
    if tally.geometry:
        raise fail(
            where,
            f"{len(tally.geometry)} image(s) are too small or too long to become "
            f"{image_size}x{image_size}: {_listed(tally.geometry)}",
            geometry_fix(image_size),
        )
    if tally.scale:
        raise fail(
            where,
            f"{len(tally.scale)} image(s) have pixel values of unclear scale: "
            f"{_listed(tally.scale)}",
            "save them as 8-bit images (0..255)",
        )


def image_notes(tally: ImageTally, ignored: int, image_size: int) -> list[str]:
    notes = []
    if ignored:
        notes.append(f"ignored {ignored} non-image entries in the class folders")
    if tally.converted:
        notes.append(f"converted {tally.converted} images to RGB")
    if tally.sixteen:
        notes.append(sixteen_bit_note(tally.sixteen, tally.peak16) + ", grey copied to R, G, B")
    if tally.floats:
        notes.append(f"scaled {tally.floats} float (mode F) images to 0..255, grey to RGB")
    other = sorted(s for s in tally.sizes if s != (image_size, image_size))
    if tally.resized:
        shown = ", ".join(f"{w}x{h}" for w, h in other[:4]) + (", ..." if len(other) > 4 else "")
        notes.append(
            f"resized {tally.resized} images of size {shown} to {image_size}x{image_size} "
            "(Lanczos, centre-cropped to square)"
        )
    return notes
