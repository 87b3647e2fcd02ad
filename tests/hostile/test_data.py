"""Hostile data for inspect-data: ambiguous pixel scales, degenerate sizes, clashing names, special files."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_images
from hostile.harness import CLASS_NAMES, Case, Ctx, param, run_case

pytestmark = pytest.mark.slow


def _floats(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    images, labels = make_images(n)
    return images.astype(np.float32) / 255.0, labels


def _folder(ctx: Ctx, classes: list[str], per_class: int = 6, root: Path | None = None) -> Path:
    """A valid folder of class folders of distinct RGB PNGs, one folder per name."""
    images, _ = make_images(per_class * len(classes), seed=5)
    root = root if root is not None else ctx.tmp / "cells"
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(images[k * per_class + i]).save(root / name / f"{i}.png")
    return root


# -- pixel values whose scale is not clear ---------------------------------------------------


def float_stray_value(ctx: Ctx) -> list[str]:
    images, labels = _floats()
    images[7, 3, 3, 0] = 1.2  # one stray value above 1 in [0, 1] images
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels)]


def float_one_outlier_pixel(ctx: Ctx) -> list[str]:
    images, labels = _floats()
    images[:, 0, 0, 0] = 200.0  # every image in [0, 1] but one pixel each
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels)]


def float_up_to_one_and_a_half(ctx: Ctx) -> list[str]:
    images, labels = _floats()
    return ["inspect-data", ctx.npz("data.npz", images=images * 1.5, labels=labels)]


def float_mixed_scales(ctx: Ctx) -> list[str]:
    images, labels = _floats()
    images[::2] *= 255.0  # half the images in [0, 255], half in [0, 1]
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels)]


def uint16_array(ctx: Ctx) -> list[str]:
    images, labels = make_images(48)
    wide = images.astype(np.uint16) * 257
    return ["inspect-data", ctx.npz("data.npz", images=wide, labels=labels)]


def png16_folder(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2])
    grey, _ = make_images(1, seed=9)
    Image.fromarray(grey[0, :, :, 0].astype(np.uint16) * 257).save(root / "basophil" / "w.png")
    return ["inspect-data", "cells"]


def float_tiff_unclear(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2])
    values = np.linspace(0, 1.5, 96 * 96, dtype=np.float32).reshape(96, 96)
    Image.fromarray(values, mode="F").save(root / "eosinophil" / "f.tif")
    return ["inspect-data", "cells", "--convert"]


# -- sizes that would be invented or cropped away --------------------------------------------


def tiny_images(ctx: Ctx) -> list[str]:
    images, labels = make_images(48, size=1)
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels)]


def long_images(ctx: Ctx) -> list[str]:
    images, labels = make_images(48, size=1)
    strip = np.repeat(images, 400, axis=2)[:, :, :400]  # (48, 1, 400, 3)
    return ["inspect-data", ctx.npz("data.npz", images=strip, labels=labels)]


def tiny_image_in_folder(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2])
    Image.new("RGB", (1, 1), (200, 100, 150)).save(root / "basophil" / "dot.png")
    return ["inspect-data", "cells"]


def long_image_in_folder(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2])
    Image.new("RGB", (4000, 1), (200, 100, 150)).save(root / "eosinophil" / "line.png")
    return ["inspect-data", "cells"]


def huge_image_in_folder(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2])
    Image.new("L", (10000, 9500), 128).save(root / "basophil" / "scan.png")  # 95 Mpx, 90 kB
    return ["inspect-data", "cells"]


# -- class names that differ only in spelling ------------------------------------------------


def case_variant_folders(ctx: Ctx) -> list[str]:
    _folder(ctx, ["Basophil", "basophil", "BASOPHIL", "eosinophil"])
    return ["inspect-data", "cells"]


def underscore_variant_folders(ctx: Ctx) -> list[str]:
    _folder(ctx, ["immature_granulocytes", "immature granulocytes", "platelet"])
    return ["inspect-data", "cells"]


def case_variant_labels(ctx: Ctx) -> list[str]:
    images, _ = make_images(48)
    names = np.array(["basophil", "Basophil", "eosinophil", "BASOPHIL "])[np.arange(48) % 4]
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=names)]


def case_variant_class_names(ctx: Ctx) -> list[str]:
    images, labels = make_images(48, n_classes=3)
    names = np.array(["platelet", "Platelet", "basophil"])
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels, class_names=names)]


# -- files that are not files ----------------------------------------------------------------


def _outside(ctx: Ctx) -> Path:
    """A folder outside the watched case folder, removed after the test: the harness reads
    every file it watches, and reading a FIFO or /dev/zero never ends."""
    folder = Path(tempfile.mkdtemp(prefix="blood-automl-special-"))
    ctx.request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


def fifo_as_data(ctx: Ctx) -> list[str]:
    fifo = _outside(ctx) / "data.npz"
    os.mkfifo(fifo)
    return ["inspect-data", str(fifo)]


def symlink_to_fifo_as_data(ctx: Ctx) -> list[str]:
    outside = _outside(ctx)
    os.mkfifo(outside / "pipe")
    (outside / "data.npz").symlink_to(outside / "pipe")
    return ["inspect-data", str(outside / "data.npz")]


def dev_zero_as_data(ctx: Ctx) -> list[str]:
    return ["inspect-data", "/dev/zero"]


def fifo_as_image(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2], root=_outside(ctx) / "cells")
    os.mkfifo(root / "basophil" / "9.png")
    return ["inspect-data", str(root)]


def fifo_as_class_folder(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2], root=_outside(ctx) / "cells")
    os.mkfifo(root / "platelet")
    return ["inspect-data", str(root)]


def image_linked_to_dev_zero(ctx: Ctx) -> list[str]:
    root = _folder(ctx, CLASS_NAMES[:2], root=_outside(ctx) / "cells")
    (root / "basophil" / "9.png").symlink_to("/dev/zero")
    return ["inspect-data", str(root)]


# -- .npy headers that lie -------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _forged_images_header(ctx: Ctx, header: bytes) -> list[str]:
    _, labels = make_images(48)
    with zipfile.ZipFile(ctx.tmp / "data.npz", "w") as z:
        z.writestr("images.npy", header + b"\0" * 4096)
        z.writestr("labels.npy", _npy(labels))
    return ["inspect-data", "data.npz"]


def npy_header_50_terabytes(ctx: Ctx) -> list[str]:
    buf = io.BytesIO()
    shape = (50_000_000, 1000, 1000, 1)  # 5e13 bytes of uint8
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    return _forged_images_header(ctx, buf.getvalue())


def npy_header_garbage(ctx: Ctx) -> list[str]:
    header = b"\x93NUMPY\x01\x00" + b"\x76\x00" + b"{'descr': '|u1', 'shape': (oops" + b" " * 86
    return _forged_images_header(ctx, header + b"\n")


def _patched_zip(ctx: Ctx, flag_bit: int = 0, method: int | None = None) -> list[str]:
    """A valid .npz whose first member claims encryption or an unknown compression method."""
    ctx.good_npz()
    raw = bytearray((ctx.tmp / "data.npz").read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    raw[local + 6] |= flag_bit
    raw[central + 8] |= flag_bit
    if method is not None:
        raw[local + 8 : local + 10] = method.to_bytes(2, "little")
        raw[central + 10 : central + 12] = method.to_bytes(2, "little")
    (ctx.tmp / "data.npz").write_bytes(bytes(raw))
    return ["inspect-data", "data.npz"]


def encrypted_member(ctx: Ctx) -> list[str]:
    return _patched_zip(ctx, flag_bit=1)


def unknown_compression(ctx: Ctx) -> list[str]:
    return _patched_zip(ctx, method=99)


CASES = [
    # ambiguous pixel scales
    Case("float-stray-value", float_stray_value, "scale is ambiguous", "scale every image"),
    Case(
        "float-outlier-pixel", float_one_outlier_pixel, "scale is ambiguous", "save them as uint8"
    ),
    Case("float-max-1.5", float_up_to_one_and_a_half, "largest value 1.5", "scale every image"),
    Case("float-mixed-scales", float_mixed_scales, "mixes two scales", "scale every image"),
    Case("uint16-array", uint16_array, "16-bit pixel values", "pass --convert"),
    Case("png16-folder", png16_folder, "are 16-bit (e.g. basophil/w.png", "pass --convert"),
    Case("float-tiff-unclear", float_tiff_unclear, "eosinophil/f.tif", "save them as 8-bit"),
    # degenerate sizes
    Case("tiny-1x1-images", tiny_images, "are 1x1", "crop or pad"),
    Case("long-400x1-images", long_images, "aspect ratio 400:1", "crop or pad"),
    Case("tiny-image-in-folder", tiny_image_in_folder, "basophil/dot.png (1x1", "at least 24 px"),
    Case(
        "long-image-in-folder", long_image_in_folder, "eosinophil/line.png (4000x1", "at most 2:1"
    ),
    Case("huge-image-in-folder", huge_image_in_folder, "basophil/scan.png", "remove or replace"),
    # names that differ only in spelling
    Case("case-variant-folders", case_variant_folders, "'BASOPHIL', 'Basophil'", "one spelling"),
    Case(
        "underscore-variant-folders",
        underscore_variant_folders,
        "'immature granulocytes', 'immature_granulocytes'",
        "rename the folders",
    ),
    Case("case-variant-labels", case_variant_labels, "differ only in case", "spell each class"),
    Case("case-variant-class-names", case_variant_class_names, "'Platelet'", "one spelling"),
    # special files: refused before they are opened (opening them hung or never ended)
    Case("fifo-as-data", fifo_as_data, "is a FIFO", "give a regular .npz", timeout=60),
    Case("symlink-to-fifo", symlink_to_fifo_as_data, "is a FIFO", "give a regular", timeout=60),
    Case(
        "dev-zero-as-data", dev_zero_as_data, "is a character device", "give a regular", timeout=60
    ),
    Case("fifo-as-image", fifo_as_image, "'basophil/9.png' is a FIFO", "remove it", timeout=60),
    Case(
        "fifo-as-class-folder", fifo_as_class_folder, "'platelet' is a FIFO", "remove", timeout=60
    ),
    Case("image-to-dev-zero", image_linked_to_dev_zero, "character device", "remove", timeout=60),
    # lying .npy headers
    Case("npy-header-50tb", npy_header_50_terabytes, "declares shape", "re-create the file"),
    Case("npy-header-garbage", npy_header_garbage, "corrupt .npy header", "re-create the file"),
    Case("npz-encrypted-member", encrypted_member, "is encrypted", "no encryption"),
    Case("npz-unknown-compression", unknown_compression, "cannot be unpacked", "re-create"),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_data_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
