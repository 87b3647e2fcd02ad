"""Reading every --data form, and one clear line (and nothing written) for every kind of bad input."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl.data import PBC_CLASS_NAMES, load_dataset, prepare_data
from blood_automl.errors import DataError
from conftest import make_images

from .conftest import small_npz

# --- writers of bad inputs: each returns (the --data argument, the text the error must name) ---


def _npz(tmp: Path, name: str = "bad.npz", **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _good(n: int = 40, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return make_images(n, size=size)


def missing_labels(tmp: Path) -> Path:
    return _npz(tmp, images=_good()[0])


def missing_images(tmp: Path) -> Path:
    return _npz(tmp, x=_good()[0], labels=_good()[1])


def object_labels(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images, labels=np.array([*labels[:-1].tolist(), None], dtype=object))


def object_images(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=np.array([*list(images), None], dtype=object)[:-1], labels=labels)


def pickle_file(tmp: Path) -> Path:
    path = tmp / "pickled.npz"
    path.write_bytes(pickle.dumps({"images": [1, 2, 3]}))
    return path


def complex_images(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images.astype(np.complex64), labels=labels)


def string_images(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images.astype(str), labels=labels)


def bool_labels(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images, labels=labels > 3)


def flat_images(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images.reshape(len(images), -1), labels=labels)


def five_d_images(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images[:, None], labels=labels)


def two_channels(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images[..., :2], labels=labels)


def grayscale(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images[..., 0], labels=labels)


def grayscale_1(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images[..., :1], labels=labels)


def rgba(tmp: Path) -> Path:
    images, labels = _good()
    alpha = np.full((*images.shape[:3], 1), 255, np.uint8)
    return _npz(tmp, images=np.concatenate([images, alpha], axis=3), labels=labels)


def nan_images(tmp: Path) -> Path:
    images, labels = _good()
    x = images.astype(np.float32) / 255
    x[7, 3, 3, 1] = np.nan
    return _npz(tmp, images=x, labels=labels)


def inf_images(tmp: Path) -> Path:
    images, labels = _good()
    x = images.astype(np.float64)
    x[2, 0, 0, 0] = np.inf
    return _npz(tmp, images=x, labels=labels)


def out_of_range_pixels(tmp: Path) -> Path:
    images, labels = _good()
    x = images.astype(np.int16)
    x[4, 1, 1, 2] = 300
    return _npz(tmp, images=x, labels=labels)


def label_out_of_range(tmp: Path) -> Path:
    images, labels = _good()
    labels = labels.copy()
    labels[17] = 9
    return _npz(tmp, images=images, labels=labels)


def negative_label(tmp: Path) -> Path:
    images, labels = _good()
    labels = labels.copy()
    labels[3] = -1
    return _npz(tmp, images=images, labels=labels)


def label_beyond_class_names(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images, labels=labels, class_names=np.array(["a", "b", "c"]))


def mixed_labels(tmp: Path) -> Path:
    images, labels = _good()
    text = [str(v) for v in labels]
    text[5] = "eosinophil"
    return _npz(tmp, images=images, labels=np.array(text))


def fractional_labels(tmp: Path) -> Path:
    images, labels = _good()
    x = labels.astype(np.float32)
    x[6] = 1.5
    return _npz(tmp, images=images, labels=x)


def unknown_label_name(tmp: Path) -> Path:
    images, labels = _good()
    names = np.array(PBC_CLASS_NAMES)
    text = names[labels]
    text[11] = "blast"
    return _npz(tmp, images=images, labels=text, class_names=names)


def one_hot_labels(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images, labels=np.eye(8, dtype=np.int64)[labels])


def length_mismatch(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(tmp, images=images, labels=labels[:-1])


def empty_dataset(tmp: Path) -> Path:
    return _npz(tmp, images=np.zeros((0, 16, 16, 3), np.uint8), labels=np.zeros(0, np.int64))


def duplicate_class_names(tmp: Path) -> Path:
    images, labels = _good()
    names = np.array([*PBC_CLASS_NAMES[:7], "basophil"])
    return _npz(tmp, images=images, labels=labels, class_names=names)


def too_few_in_class(tmp: Path) -> Path:
    images, labels = _good(n=42)
    labels = labels.copy()
    labels[labels == 7] = 6
    labels[:2] = 7
    return _npz(tmp, images=images, labels=labels)


def medmnist_missing_val(tmp: Path) -> Path:
    images, labels = _good()
    return _npz(
        tmp,
        train_images=images,
        train_labels=labels[:, None],
        test_images=images,
        test_labels=labels,
    )


def npy_file(tmp: Path) -> Path:
    path = tmp / "images.npy"
    np.save(path, _good()[0])
    return path


def zip_not_npz(tmp: Path) -> Path:
    path = tmp / "photos.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("basophil/1.png", b"not really a png")
    return path


def truncated(tmp: Path) -> Path:
    path = small_npz(tmp / "full.npz")
    data = path.read_bytes()
    cut = tmp / "truncated.npz"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def corrupt_member(tmp: Path) -> Path:
    path = small_npz(tmp / "corrupt.npz")
    data = bytearray(path.read_bytes())
    data[300:340] = b"\xff" * 40  # inside the images array: the CRC check fails
    path.write_bytes(bytes(data))
    return path


def empty_file(tmp: Path) -> Path:
    path = tmp / "empty.npz"
    path.write_bytes(b"")
    return path


def random_bytes(tmp: Path) -> Path:
    path = tmp / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    return path


def no_such_file(tmp: Path) -> Path:
    return tmp / "nowhere.npz"


def _folder(
    tmp: Path, per_class: int = 4, classes: tuple[str, ...] = ("basophil", "eosinophil")
) -> Path:
    root = tmp / "cells"
    images, _ = make_images(per_class * len(classes), size=20)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(images[k * per_class + j]).save(root / name / f"{j}.png")
    return root


def unreadable_image(tmp: Path) -> Path:
    root = _folder(tmp)
    (root / "eosinophil" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def truncated_image(tmp: Path) -> Path:
    root = _folder(tmp)
    data = (root / "basophil" / "0.png").read_bytes()
    (root / "basophil" / "half.png").write_bytes(data[: len(data) // 2])
    return root


def empty_class_folder(tmp: Path) -> Path:
    root = _folder(tmp)
    (root / "platelet").mkdir()
    return root


def no_class_folders(tmp: Path) -> Path:
    root = tmp / "flat"
    root.mkdir()
    Image.fromarray(_good()[0][0]).save(root / "a.png")
    return root


def grayscale_files(tmp: Path) -> Path:
    root = _folder(tmp)
    Image.fromarray(_good()[0][0, ..., 0]).save(root / "basophil" / "grey.png")
    return root


def unknown_bloodmnist_size(tmp: Path) -> str:
    return "bloodmnist:32"


BAD_INPUTS: list[tuple[Callable[[Path], Path | str], str]] = [
    (missing_labels, "missing array(s) 'labels'"),
    (missing_images, "missing array(s) 'images'"),
    (object_labels, "object array (pickled"),
    (object_images, "object array (pickled"),
    (pickle_file, "pickled Python data"),
    (complex_images, "dtype complex64"),
    (string_images, "dtype <U"),
    (bool_labels, "dtype bool"),
    (flat_images, "must be a 4-D array"),
    (five_d_images, "must be a 4-D array"),
    (two_channels, "must have 3 colour channels"),
    (grayscale, "grayscale"),
    (grayscale_1, "grayscale"),
    (rgba, "RGBA"),
    (nan_images, "non-finite value (nan) in image 7"),
    (inf_images, "non-finite value (inf) in image 2"),
    (out_of_range_pixels, "pixel values in [0, 255], but got 300 in image 4"),
    (label_out_of_range, "labels must be integers in [0, 8), but got 9 at index 17"),
    (negative_label, "labels must be integers in [0, 8), but got -1 at index 3"),
    (label_beyond_class_names, "labels must be integers in [0, 3), but got 3 at index 3"),
    (mixed_labels, "mixes integers and names ('0' at index 0, 'eosinophil' at index 5)"),
    (fractional_labels, "must be integers, but got 1.5 at index 6"),
    (unknown_label_name, "label 'blast' at index 11 is not one of class_names"),
    (one_hot_labels, "must have shape (N,) or (N, 1)"),
    (length_mismatch, "length mismatch"),
    (empty_dataset, "the data set is empty"),
    (duplicate_class_names, "repeats 'basophil'"),
    (too_few_in_class, "class 'platelet' has 2 image(s), too few"),
    (medmnist_missing_val, "misses 'val_images'"),
    (npy_file, "single .npy array"),
    (zip_not_npz, "zip archive but not an .npz"),
    (truncated, "corrupt or truncated"),
    (corrupt_member, "is corrupt"),
    (empty_file, "empty file"),
    (random_bytes, "not an .npz"),
    (no_such_file, "no such file or folder"),
    (unreadable_image, "cannot be read: eosinophil/broken.jpg"),
    (truncated_image, "cannot be read: basophil/half.png"),
    (empty_class_folder, "class folder 'platelet' holds no image files"),
    (no_class_folders, "holds no class folders"),
    (grayscale_files, "basophil/grey.png, mode L"),
    (unknown_bloodmnist_size, "unknown BloodMNIST size '32'"),
]


@pytest.mark.parametrize(("make", "problem"), BAD_INPUTS, ids=[m.__name__ for m, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_writes_nothing(
    tmp_path: Path, make: Callable[[Path], Path | str], problem: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    data = make(inputs)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out_dir = tmp_path / "studies" / "s" / "data"
    with pytest.raises(DataError) as info:
        prepare_data(data, out_dir, image_size=16, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert problem in message
    assert str(data) in message  # names the file (or folder, or the --data argument)
    assert "; " in message  # the problem is followed by the fix
    assert not (tmp_path / "studies").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --- good inputs ---


def test_npz_with_integer_labels_means_the_pbc_classes(tmp_path: Path) -> None:
    ds = load_dataset(small_npz(tmp_path / "d.npz"), image_size=16)
    assert ds.images.shape == (40, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (40,)
    assert ds.class_names == PBC_CLASS_NAMES
    assert ds.format == "npz" and ds.predefined_split is None
    assert ds.source == str(tmp_path / "d.npz")
    assert any("8 PBC classes" in n for n in ds.notes)


def test_npz_with_string_labels_and_column_labels(tmp_path: Path) -> None:
    images, labels = make_images(30, size=16, n_classes=3)
    names = np.array(["neutrophil", "basophil", "platelet"])
    ds = load_dataset(_npz(tmp_path, images=images, labels=names[labels][:, None]), image_size=16)
    assert ds.class_names == ("basophil", "neutrophil", "platelet")  # sorted
    assert [ds.class_names[i] for i in ds.labels] == names[labels].tolist()
    ds2 = load_dataset(
        _npz(tmp_path, "b.npz", images=images, labels=labels[:, None], class_names=names),
        image_size=16,
    )
    assert ds2.class_names == ("neutrophil", "basophil", "platelet")
    assert np.array_equal(ds2.labels, labels)


def test_float_images_are_scaled_and_reported(tmp_path: Path) -> None:
    images, labels = make_images(16, size=16)
    ds = load_dataset(
        _npz(tmp_path, images=images.astype(np.float32) / 255, labels=labels), image_size=16
    )
    assert np.abs(ds.images.astype(int) - images).max() <= 1
    assert any("float images" in n for n in ds.notes)


def test_other_sizes_are_resized_with_a_note(tmp_path: Path) -> None:
    images, labels = make_images(16, size=40)
    ds = load_dataset(_npz(tmp_path, images=images[:, :, :36], labels=labels), image_size=24)
    assert ds.images.shape == (16, 24, 24, 3)
    assert any(
        "resized 16 images from 36x40 to 24x24" in n and "centre-cropped" in n for n in ds.notes
    )


@pytest.mark.parametrize("kind", ["grey3", "grey4", "rgba"])
def test_convert_turns_grayscale_and_rgba_into_rgb(tmp_path: Path, kind: str) -> None:
    images, labels = make_images(16, size=16)
    if kind == "grey3":
        x = images[..., 0]
    elif kind == "grey4":
        x = images[..., :1]
    else:
        x = np.concatenate([images, np.zeros((*images.shape[:3], 1), np.uint8)], axis=3)
    ds = load_dataset(_npz(tmp_path, images=x, labels=labels), image_size=16, convert=True)
    assert ds.images.shape == (16, 16, 16, 3)
    if kind == "rgba":
        assert np.array_equal(ds.images, images)
    else:
        assert np.array_equal(ds.images[..., 2], images[..., 0])
    assert ds.notes


def test_medmnist_npz_keeps_its_split(tmp_path: Path) -> None:
    images, labels = make_images(60, size=28)
    path = _npz(
        tmp_path,
        "pathmnist.npz",
        train_images=images[:40],
        train_labels=labels[:40, None].astype(np.uint8),
        val_images=images[40:48],
        val_labels=labels[40:48, None].astype(np.uint8),
        test_images=images[48:],
        test_labels=labels[48:, None].astype(np.uint8),
    )
    ds = load_dataset(path, image_size=32)
    assert ds.format == "medmnist"
    assert ds.images.shape == (60, 32, 32, 3)
    assert ds.predefined_split is not None
    assert np.bincount(ds.predefined_split).tolist() == [40, 8, 12]
    assert np.array_equal(ds.labels, labels)
    assert any("28x28 to 32x32" in n for n in ds.notes)


def test_folder_of_class_folders(tmp_path: Path) -> None:
    root = _folder(tmp_path, per_class=3, classes=("platelet", "basophil", "monocyte"))
    Image.fromarray(make_images(1, size=30)[0][0]).convert("RGBA").convert("RGB").save(
        root / "monocyte" / "x.JPG"
    )
    (root / "monocyte" / "notes.txt").write_text("not an image")
    ds = load_dataset(root, image_size=20)
    assert ds.format == "folder"
    assert ds.class_names == ("basophil", "monocyte", "platelet")
    assert np.bincount(ds.labels).tolist() == [3, 4, 3]
    assert ds.images.shape == (10, 20, 20, 3)
    assert any("ignored 1" in n for n in ds.notes)
    assert any("resized 1 images of size 30x30" in n for n in ds.notes)
    # png is lossless: the pixels come back exactly
    first = np.asarray(Image.open(root / "basophil" / "0.png"))
    assert np.array_equal(ds.images[0], first)


def test_folder_grayscale_with_convert(tmp_path: Path) -> None:
    root = grayscale_files(tmp_path)
    ds = load_dataset(root, image_size=20, convert=True)
    assert len(ds) == 9
