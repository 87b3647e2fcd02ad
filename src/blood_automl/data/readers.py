"""Readers for every ``--data`` form: .npz, MedMNIST .npz, a folder of class folders, BloodMNIST."""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from blood_automl.data.dataset import PBC_CLASS_NAMES, SPLIT_NAMES, Dataset
from blood_automl.data.validate import (
    check_image_size,
    fail,
    resize_images,
    resize_one,
    to_labels,
    to_rgb_uint8,
)
from blood_automl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name endings read from class folders (case-insensitive)."""

_BLOODMNIST = re.compile(r"^bloodmnist(?::(.*))?$", re.IGNORECASE)
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
}


def is_bloodmnist(data: str | Path) -> bool:
    """True when ``data`` names BloodMNIST (``bloodmnist`` or ``bloodmnist:SIZE``), not a path."""
    text = str(data)
    return bool(_BLOODMNIST.match(text)) and not Path(text).exists()


def bloodmnist_size(data: str | Path) -> int:
    """The image size asked for by ``bloodmnist[:SIZE]`` (28 when no size is given)."""
    from blood_automl.data.download import BLOODMNIST_FILES

    match = _BLOODMNIST.match(str(data))
    if match is None:
        raise ValueError(f"not a BloodMNIST name: {data}")
    size = match.group(1)
    if size is None or size == "":
        return 28
    if not size.isdecimal() or int(size) not in BLOODMNIST_FILES:
        raise DataError(
            f"{data}: unknown BloodMNIST size '{size}'; "
            "use bloodmnist (28x28), bloodmnist:64, bloodmnist:128 or bloodmnist:224"
        )
    return int(size)


def source_path(data: str | Path, *, cache_dir: Path | None = None) -> Path:
    """The local file or folder that ``data`` stands for, downloading BloodMNIST if needed."""
    if is_bloodmnist(data):
        from blood_automl.data.download import fetch_bloodmnist

        return fetch_bloodmnist(bloodmnist_size(data), cache_dir=cache_dir)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"{data}: no such file or folder; give an .npz file, a folder of class folders, "
            "or bloodmnist[:64|128|224]"
        )
    return path


def load_dataset(
    data: str | Path,
    *,
    image_size: int = 96,
    convert: bool = False,
    cache_dir: Path | None = None,
) -> Dataset:
    """Read and validate ``data`` into a :class:`Dataset` of RGB uint8 images of ``image_size``.

    ``data`` is an .npz file (``images`` + ``labels`` [+ ``class_names``]), a MedMNIST .npz
    (``train_images``, ``train_labels``, ``val_*``, ``test_*``: its split is kept), a folder
    of class folders of images, or ``bloodmnist`` / ``bloodmnist:64|128|224`` (downloaded
    once into the cache, see :func:`blood_automl.data.download.fetch_bloodmnist`).
    Raises :class:`DataError` with one line naming the file, the problem and the fix.
    """
    image_size = check_image_size(image_size)
    path = source_path(data, cache_dir=cache_dir)
    if is_bloodmnist(data):
        ds = read_medmnist_npz(path, source=str(data), image_size=image_size, convert=convert)
        size = bloodmnist_size(data)
        note = f"BloodMNIST{'' if size == 28 else f'+ {size}x{size}'} from the MedMNIST Zenodo record, cached at {path}"
        return Dataset(
            images=ds.images,
            labels=ds.labels,
            class_names=PBC_CLASS_NAMES,
            source=str(data),
            format="bloodmnist",
            predefined_split=ds.predefined_split,
            notes=(note, *ds.notes),
        )
    if path.is_dir():
        return read_folder(path, source=str(data), image_size=image_size, convert=convert)
    return read_npz(path, source=str(data), image_size=image_size, convert=convert)


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """Open an .npz without ever unpickling, with one clear error per kind of bad file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise fail(
            str(path),
            f"cannot be read ({exc.strerror or exc})",
            "check the path and its permissions",
        ) from exc
    if not head:
        raise fail(str(path), "is an empty file", "re-create or re-download it")
    if head.startswith(b"\x93NUMPY"):
        raise fail(
            str(path),
            "is a single .npy array, not an .npz archive",
            "save images and labels together with np.savez(path, images=images, labels=labels)",
        )
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what = (
            "pickled Python data, which is never loaded"
            if head[:1] == b"\x80"
            else "not an .npz (zip) archive"
        )
        raise fail(
            str(path), f"is {what}", "give an .npz written by np.savez or np.savez_compressed"
        )
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise fail(
            str(path),
            f"is a corrupt or truncated archive ({type(exc).__name__}: {exc})",
            "re-create or re-download the file",
        ) from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):  # pragma: no cover - guarded by the header check
        raise fail(str(path), "is not an .npz archive", "give an .npz written by np.savez")
    members = npz.zip.namelist() if npz.zip is not None else []
    if not any(m.endswith(".npy") for m in members):
        npz.close()
        shown = ", ".join(members[:5]) + (", ..." if len(members) > 5 else "")
        raise fail(
            str(path),
            f"is a zip archive but not an .npz (no .npy arrays inside; holds: {shown or 'nothing'})",
            "give an .npz written by np.savez, or unpack image files into class folders",
        )
    return npz


def _array(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz, refusing object (pickled) arrays and corrupt members."""
    try:
        value = npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise fail(
                str(path),
                f"'{key}' is an object array (pickled Python objects), which is never loaded",
                f"save '{key}' as a plain numeric or string array (not dtype=object)",
            ) from exc
        raise fail(str(path), f"'{key}' cannot be read ({exc})", "re-create the file") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise fail(
            str(path),
            f"'{key}' is corrupt ({type(exc).__name__}: {exc})",
            "re-create or re-download the file",
        ) from exc
    if not isinstance(value, np.ndarray):
        raise fail(str(path), f"'{key}' is not a numpy array", "save it with np.savez")
    return value


def read_npz(
    path: Path, *, source: str | None = None, image_size: int = 96, convert: bool = False
) -> Dataset:
    """Read an .npz with ``images`` and ``labels`` (and optional ``class_names``), or a MedMNIST one."""
    with _open_npz(path) as npz:
        keys = set(npz.files)
        if "train_images" in keys or "train_labels" in keys:
            medmnist = True
        else:
            medmnist = False
            missing = [k for k in ("images", "labels") if k not in keys]
            if missing:
                found = ", ".join(sorted(keys)[:8]) or "nothing"
                raise fail(
                    str(path),
                    f"missing array(s) {', '.join(repr(m) for m in missing)} (found: {found})",
                    "save np.savez(path, images=..., labels=...[, class_names=...]) or a MedMNIST "
                    "file with train_images, train_labels, val_*, test_*",
                )
            raw_images = _array(npz, "images", path)
            raw_labels = _array(npz, "labels", path)
            raw_names = _array(npz, "class_names", path) if "class_names" in keys else None
    if medmnist:
        return read_medmnist_npz(path, source=source, image_size=image_size, convert=convert)
    where = str(path)
    images, notes = to_rgb_uint8(raw_images, where, convert=convert)
    labels, names, label_notes = to_labels(
        raw_labels, images.shape[0], where, class_names=raw_names
    )
    images, resize_notes = resize_images(images, image_size)
    return Dataset(
        images=images,
        labels=labels,
        class_names=names,
        source=source if source is not None else str(path),
        format="npz",
        predefined_split=None,
        notes=tuple(notes + label_notes + resize_notes),
    )


def read_medmnist_npz(
    path: Path, *, source: str | None = None, image_size: int = 96, convert: bool = False
) -> Dataset:
    """Read a MedMNIST .npz (``{train,val,test}_{images,labels}``), keeping its official split."""
    where = str(path)
    with _open_npz(path) as npz:
        keys = set(npz.files)
        wanted = [f"{s}_{k}" for s in SPLIT_NAMES for k in ("images", "labels")]
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise fail(
                where,
                f"looks like a MedMNIST file but misses {', '.join(repr(m) for m in missing)}",
                "give a complete MedMNIST .npz (train_*, val_*, test_*)",
            )
        parts = [
            (_array(npz, f"{s}_images", path), _array(npz, f"{s}_labels", path))
            for s in SPLIT_NAMES
        ]
        raw_names = _array(npz, "class_names", path) if "class_names" in keys else None
    shapes = {s: imgs.shape[1:] for s, (imgs, _) in zip(SPLIT_NAMES, parts, strict=True)}
    if len(set(shapes.values())) > 1:
        raise fail(
            where,
            "the MedMNIST splits have different image shapes ("
            + ", ".join(f"{s}_images {shape}" for s, shape in shapes.items())
            + ")",
            "give a MedMNIST file whose splits share one image size",
        )
    raw_images = np.concatenate([imgs for imgs, _ in parts])
    images, notes = to_rgb_uint8(raw_images, where, convert=convert, key="train_images")
    labels_list, splits = [], []
    names: tuple[str, ...] = ()
    for code, (split, (imgs, labs)) in enumerate(zip(SPLIT_NAMES, parts, strict=True)):
        labs, names, label_notes = to_labels(
            labs, imgs.shape[0], where, class_names=raw_names, key=f"{split}_labels"
        )
        labels_list.append(labs)
        splits.append(np.full(imgs.shape[0], code, dtype=np.int8))
        notes += [n for n in label_notes if n not in notes]
    images, resize_notes = resize_images(images, image_size)
    return Dataset(
        images=images,
        labels=np.concatenate(labels_list),
        class_names=names,
        source=source if source is not None else str(path),
        format="medmnist",
        predefined_split=np.concatenate(splits),
        notes=(*notes, *resize_notes),
    )


def _image_files(folder: Path) -> tuple[list[Path], int]:
    files, ignored = [], 0
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            ignored += 1
    return files, ignored


def read_folder(
    root: Path, *, source: str | None = None, image_size: int = 96, convert: bool = False
) -> Dataset:
    """Read a folder of class folders (class names = sorted folder names) of image files."""
    where = str(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise fail(
            where,
            "holds no class folders",
            "put the images of each class in its own sub-folder, e.g. DATA/basophil/*.png",
        )
    per_class: list[list[Path]] = []
    ignored = 0
    for d in class_dirs:
        files, n_ignored = _image_files(d)
        ignored += n_ignored
        if not files:
            raise fail(
                str(d),
                f"class folder '{d.name}' holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                "add images to it or remove the folder",
            )
        per_class.append(files)
    if len(class_dirs) < 2:
        raise fail(
            where,
            f"holds only one class folder ('{class_dirs[0].name}')",
            "a classifier needs at least 2 classes",
        )

    n = sum(len(f) for f in per_class)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    bad: list[str] = []
    needs_convert: list[tuple[str, str]] = []
    sizes: set[tuple[int, int]] = set()
    converted = resized = 0
    i = 0
    for label, files in enumerate(per_class):
        for f in files:
            rel = f.relative_to(root).as_posix()
            try:
                with Image.open(f) as im:
                    im.load()
                    mode = im.mode
                    if mode in _NEEDS_CONVERT_MODES and not convert:
                        needs_convert.append((rel, mode))
                        continue
                    sizes.add(im.size)
                    resized += im.size != (image_size, image_size)
                    if mode != "RGB":
                        converted += 1
                        rgb = im.convert("RGB")
                    else:
                        rgb = im
                    array = np.asarray(rgb)
            except (
                OSError,
                UnidentifiedImageError,
                ValueError,
                SyntaxError,
                Image.DecompressionBombError,
            ) as exc:
                bad.append(
                    f"{rel} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
                )
                continue
            images[i] = resize_one(array, image_size)
            labels[i] = label
            i += 1
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise fail(
            where,
            f"{len(bad)} image file(s) cannot be read: {shown}",
            "remove or replace those files",
        )
    if needs_convert:
        rel, mode = needs_convert[0]
        raise fail(
            where,
            f"{len(needs_convert)} image(s) are grayscale or have an alpha channel (e.g. {rel}, mode {mode}), "
            "but blood-automl needs RGB",
            "pass --convert (convert=True) to convert them to RGB, or save RGB images",
        )
    notes = []
    if ignored:
        notes.append(f"ignored {ignored} non-image entries in the class folders")
    if converted:
        notes.append(f"converted {converted} images to RGB")
    other = sorted(s for s in sizes if s != (image_size, image_size))
    if resized:
        shown = ", ".join(f"{w}x{h}" for w, h in other[:4]) + (", ..." if len(other) > 4 else "")
        notes.append(
            f"resized {resized} images of size {shown} to {image_size}x{image_size} "
            "(Lanczos, centre-cropped to square)"
        )
    return Dataset(
        images=images,
        labels=labels,
        class_names=tuple(d.name for d in class_dirs),
        source=source if source is not None else str(root),
        format="folder",
        predefined_split=None,
        notes=tuple(notes),
    )
