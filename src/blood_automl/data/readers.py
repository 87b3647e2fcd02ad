"""Readers for every ``--data`` form: .npz, MedMNIST .npz, a folder of class folders, BloodMNIST."""

from __future__ import annotations

import math
import os
import re
import stat
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from blood_automl.data.dataset import PBC_CLASS_NAMES, SPLIT_NAMES, Dataset
from blood_automl.data.images import (
    IMAGE_SUFFIXES,
    ImageTally,
    image_notes,
    read_image_file,
    refuse_image_problems,
    special_kind,
)
from blood_automl.data.validate import (
    check_distinct_names,
    check_geometry,
    check_image_size,
    fail,
    resize_images,
    resize_one,
    to_labels,
    to_rgb_uint8,
)
from blood_automl.errors import DataError

_BLOODMNIST = re.compile(r"^bloodmnist(?::(.*))?$", re.IGNORECASE)


def refuse_special(path: Path, shown: str | None = None) -> None:
    """Raise DataError when ``path`` (followed through links) is a FIFO, device or socket.

    Checked with ``os.stat`` before anything opens the path: opening a FIFO blocks until a
    writer comes, and a device like /dev/zero never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own check says so
    what = special_kind(mode)
    if what is not None:
        raise fail(
            shown or str(path),
            f"is {what}, not a regular file",
            "give a regular .npz file or a folder of class folders of image files",
        )


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
    refuse_special(path, str(data))
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
    refuse_special(path)
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
    """One array of an open .npz, refusing object (pickled) arrays and corrupt members.

    The member's .npy header is read first: an array whose declared size exceeds what the
    archive holds for it, or the memory available, is refused before anything is allocated.
    """
    check_declared_size(npz, key, path)
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
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise fail(
            str(path),
            f"'{key}' is corrupt or cannot be unpacked ({type(exc).__name__}: {exc})",
            "re-create or re-download the file",
        ) from exc
    except MemoryError as exc:
        raise fail(
            str(path),
            f"'{key}' does not fit in memory",
            "use a smaller data set or a machine with more memory",
        ) from exc
    if not isinstance(value, np.ndarray):
        raise fail(str(path), f"'{key}' is not a numpy array", "save it with np.savez")
    return value


ZIP_MAX_RATIO = 1100
"""More than deflate can reach (about 1032:1): a larger claimed ratio is a forged size."""


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n:,} bytes"


def _read_npy_header(
    npz: np.lib.npyio.NpzFile, member: str, path: Path, key: str
) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """The (shape, dtype, header length) of one .npy member, read without loading its data."""
    assert npz.zip is not None
    try:
        with npz.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            return tuple(int(d) for d in shape), dtype, int(f.tell())
    except (
        ValueError,
        TypeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        SyntaxError,
        tokenize.TokenError,
    ) as exc:
        raise fail(
            str(path),
            f"'{key}' has a corrupt .npy header ({type(exc).__name__}: {exc})",
            "re-create the file with np.savez",
        ) from exc
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression; encrypted
        raise fail(
            str(path),
            f"'{key}' cannot be unpacked ({type(exc).__name__}: {exc})",
            "re-create the file with np.savez or np.savez_compressed (no encryption)",
        ) from exc


def check_declared_size(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
    """Refuse an .npz member whose header declares more data than it holds or memory allows."""
    member = f"{key}.npy"
    if npz.zip is None or member not in npz.zip.namelist():
        return
    info = npz.zip.getinfo(member)
    if info.file_size > ZIP_MAX_RATIO * info.compress_size + 4096 or (
        info.compress_type == zipfile.ZIP_STORED and info.file_size > info.compress_size
    ):
        raise fail(
            str(path),
            f"'{key}' claims {_gb(info.file_size)} unpacked from {_gb(info.compress_size)} "
            "in the archive (a forged or corrupt zip entry)",
            "re-create the file with np.savez",
        )
    shape, dtype, header = _read_npy_header(npz, member, path, key)
    if dtype.hasobject:
        return  # refused when read, without unpickling
    declared = math.prod(shape) * dtype.itemsize
    held = info.file_size - header
    if declared > held:
        raise fail(
            str(path),
            f"'{key}' declares shape {shape} of {dtype} ({_gb(declared)}), but the archive "
            f"holds only {_gb(max(held, 0))} for it (a forged or truncated array)",
            "re-create the file with np.savez",
        )
    free = available_memory()
    if free is not None and declared > free:
        raise fail(
            str(path),
            f"'{key}' holds {_gb(declared)} (shape {shape}), more than the {_gb(free)} of "
            "memory available",
            "use a smaller data set or a machine with more memory",
        )


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
    check_geometry(images, image_size, where)
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
    check_geometry(images, image_size, where, key="train_images")
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


def _mode(path: Path) -> int | None:
    """``os.stat(path).st_mode`` (links followed), or None for a broken link or no access."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _visible_entries(folder: Path, root: Path) -> list[tuple[Path, int | None]]:
    """The non-hidden entries of ``folder`` with their modes, refusing FIFOs, devices, sockets."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        mode = _mode(p)
        what = special_kind(mode) if mode is not None else None
        if what is not None:
            raise fail(
                str(root),
                f"'{p.relative_to(root).as_posix()}' is {what}, not an image file or folder",
                "remove it from the data folder",
            )
        out.append((p, mode))
    return out


def _image_files(folder: Path, root: Path) -> tuple[list[Path], int]:
    files, ignored = [], 0
    for p, mode in _visible_entries(folder, root):
        if mode is not None and stat.S_ISREG(mode) and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            ignored += 1
    return files, ignored


def _read_image(
    f: Path, rel: str, *, image_size: int, convert: bool, tally: ImageTally
) -> np.ndarray | None:
    """Read one image file as a resized (image_size, image_size, 3) uint8, or note why not."""
    array = read_image_file(f, rel, convert=convert, tally=tally, image_size=image_size)
    if array is None:
        return None
    h, w = array.shape[:2]
    tally.resized += (w, h) != (image_size, image_size)
    return resize_one(array, image_size)


def read_folder(
    root: Path, *, source: str | None = None, image_size: int = 96, convert: bool = False
) -> Dataset:
    """Read a folder of class folders (class names = sorted folder names) of image files."""
    class_dirs = _class_folders(root)
    per_class, ignored = _files_per_class(class_dirs, root)
    images, labels, tally = _read_class_images(
        root, per_class, image_size=image_size, convert=convert
    )
    refuse_image_problems(str(root), tally, image_size)
    return Dataset(
        images=images,
        labels=labels,
        class_names=tuple(d.name for d in class_dirs),
        source=source if source is not None else str(root),
        format="folder",
        predefined_split=None,
        notes=tuple(image_notes(tally, ignored, image_size)),
    )


def _class_folders(root: Path) -> list[Path]:
    """The visible sub-folders of ``root``, sorted, each name one class spelled one way."""
    where = str(root)
    class_dirs = [
        p for p, mode in _visible_entries(root, root) if mode is not None and stat.S_ISDIR(mode)
    ]
    if not class_dirs:
        raise fail(
            where,
            "holds no class folders",
            "put the images of each class in its own sub-folder, e.g. DATA/basophil/*.png",
        )
    check_distinct_names(
        [d.name for d in class_dirs],
        where,
        "the class folders",
        "rename the folders so that each class has one spelling (move the images of a class "
        "into one folder)",
    )
    return class_dirs


def _files_per_class(class_dirs: list[Path], root: Path) -> tuple[list[list[Path]], int]:
    """The image files of each class folder (none may be empty, 2 classes at least), the rest."""
    per_class: list[list[Path]] = []
    ignored = 0
    for d in class_dirs:
        files, n_ignored = _image_files(d, root)
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
            str(root),
            f"holds only one class folder ('{class_dirs[0].name}')",
            "a classifier needs at least 2 classes",
        )
    return per_class, ignored


def _read_class_images(
    root: Path, per_class: list[list[Path]], *, image_size: int, convert: bool
) -> tuple[np.ndarray, np.ndarray, ImageTally]:
    """Every file read and resized, labelled by its class's index; what reading found.

    Files that cannot be used are noted in the tally and leave their rows unfilled (the
    caller refuses the data set when the tally holds a problem).
    """
    n = sum(len(f) for f in per_class)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    tally = ImageTally()
    i = 0
    for label, files in enumerate(per_class):
        for f in files:
            rel = f.relative_to(root).as_posix()
            image = _read_image(f, rel, image_size=image_size, convert=convert, tally=tally)
            if image is None:
                continue
            images[i] = image
            labels[i] = label
            i += 1
    return images, labels, tally
