"""The prepared-data cache: written atomically, reused, fingerprinted, verified, refused when different."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blood_automl.data import load_prepared, prepare_data
from blood_automl.data.prepare import ARRAY_NAMES, MANIFEST
from blood_automl.errors import ConfigError, DataError
from conftest import make_images

from .conftest import small_npz


def _data(tmp_path: Path, name: str = "d.npz", n: int = 80, seed: int = 0) -> Path:
    return small_npz(tmp_path / name, n=n, size=16, seed=seed)


def _no_temp_dirs(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_prepare_writes_arrays_and_manifest(tmp_path: Path) -> None:
    data = _data(tmp_path)
    out = tmp_path / "studies" / "s" / "data"
    prepared = prepare_data(data, out, image_size=16)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.npy" for n in ARRAY_NAMES] + [MANIFEST]
    )
    assert _no_temp_dirs(out.parent)
    assert prepared.x_train.dtype == np.uint8 and prepared.x_train.shape[1:] == (16, 16, 3)
    assert prepared.y_train.dtype == np.int64
    assert len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test) == 80
    assert prepared.image_size == 16 and len(prepared.fingerprint) == 64
    manifest = json.loads((out / MANIFEST).read_text())
    for key in (
        "source",
        "format",
        "n_input",
        "n_kept",
        "removed",
        "split_sizes",
        "seed",
        "fractions",
        "fingerprint",
        "created",
    ):
        assert key in manifest, key
    assert manifest["fingerprint"] == prepared.fingerprint
    assert manifest["split_sizes"] == {
        "train": len(prepared.y_train),
        "val": len(prepared.y_val),
        "test": len(prepared.y_test),
    }

    loaded = load_prepared(out)
    assert isinstance(loaded.x_train, np.memmap) and not loaded.x_train.flags.writeable
    assert loaded.fingerprint == prepared.fingerprint
    assert loaded.class_names == prepared.class_names
    for name in ARRAY_NAMES:
        assert np.array_equal(getattr(loaded, name), getattr(prepared, name))
    assert not isinstance(load_prepared(out, mmap=False).x_val, np.memmap)


def test_same_input_gives_same_fingerprint_and_is_reused(tmp_path: Path) -> None:
    data = _data(tmp_path)
    out = tmp_path / "a"
    first = prepare_data(data, out, image_size=16)
    created = json.loads((out / MANIFEST).read_text())["created"]
    mtime = (out / "x_train.npy").stat().st_mtime_ns
    again = prepare_data(data, out, image_size=16)
    assert again.fingerprint == first.fingerprint
    assert (out / "x_train.npy").stat().st_mtime_ns == mtime
    assert json.loads((out / MANIFEST).read_text())["created"] == created
    # an independent preparation elsewhere, and the same arrays re-saved compressed, agree too
    assert prepare_data(data, tmp_path / "b", image_size=16).fingerprint == first.fingerprint
    with np.load(data) as f:
        np.savez_compressed(tmp_path / "resaved.npz", **{k: f[k] for k in f.files})
    assert (
        prepare_data(tmp_path / "resaved.npz", out, image_size=16).fingerprint == first.fingerprint
    )


def test_fingerprint_changes_when_the_data_changes(tmp_path: Path) -> None:
    images, labels = make_images(80, size=16)
    base = prepare_data(
        small_npz(tmp_path / "a.npz", n=80), tmp_path / "pa", image_size=16
    ).fingerprint
    pixel = images.copy()
    pixel[10, 0, 0, 0] ^= 1
    np.savez(tmp_path / "b.npz", images=pixel, labels=labels)
    relabel = labels.copy()
    relabel[[0, 1]] = relabel[[1, 0]]
    np.savez(tmp_path / "c.npz", images=images, labels=relabel)
    np.savez(
        tmp_path / "d.npz",
        images=images,
        labels=labels,
        class_names=np.array([f"c{i}" for i in range(8)]),
    )
    others = [
        prepare_data(tmp_path / f"{k}.npz", tmp_path / f"p{k}", image_size=16).fingerprint
        for k in "bcd"
    ]
    others.append(
        prepare_data(tmp_path / "a.npz", tmp_path / "pseed", image_size=16, seed=1).fingerprint
    )
    assert len({base, *others}) == 5


def test_different_data_for_an_existing_study_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "studies" / "s" / "data"
    prepare_data(_data(tmp_path), out, image_size=16)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    other = _data(tmp_path, "other.npz", seed=7)
    with pytest.raises(DataError) as info:
        prepare_data(other, out, image_size=16)
    message = str(info.value)
    assert "\n" not in message
    assert (
        "prepared from" in message and "different data" in message and "new --study name" in message
    )
    with pytest.raises(DataError, match="different data"):
        prepare_data(_data(tmp_path), out, image_size=16, seed=3)  # same data, other split
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert _no_temp_dirs(out.parent)


def test_tampered_arrays_or_manifest_are_detected(tmp_path: Path) -> None:
    out = tmp_path / "p"
    prepare_data(_data(tmp_path), out, image_size=16)
    x = np.load(out / "x_val.npy")
    x[0, 0, 0, 0] ^= 1
    np.save(out / "x_val.npy", x)
    with pytest.raises(DataError, match=r"x_val\.npy: the array's bytes do not match"):
        load_prepared(out)
    load_prepared(out, verify=False)  # the cheap check (shapes, dtypes, manifest) still passes

    out2 = tmp_path / "q"
    prepare_data(_data(tmp_path), out2, image_size=16)
    manifest = json.loads((out2 / MANIFEST).read_text())
    manifest["class_names"][0] = "blast"
    (out2 / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="fingerprint does not match"):
        load_prepared(out2, verify=False)
    (out2 / "y_test.npy").unlink()
    with pytest.raises(DataError, match=r"y_test\.npy: prepared array missing"):
        load_prepared(out2)


def test_load_prepared_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no prepared data"):
        load_prepared(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not a readable prepared-data manifest"):
        load_prepared(tmp_path / "bad")


def test_existing_folder_that_is_not_prepared_data(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists but holds no prepared data"):
        prepare_data(_data(tmp_path), out, image_size=16)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_data(_data(tmp_path), empty, image_size=16)
    assert (empty / MANIFEST).is_file()


def test_bad_options_write_nothing(tmp_path: Path) -> None:
    data = _data(tmp_path)
    with pytest.raises(ConfigError, match="sum to 1"):
        prepare_data(data, tmp_path / "o", fractions=(0.5, 0.3, 0.3))
    with pytest.raises(ConfigError, match="image size"):
        prepare_data(data, tmp_path / "o", image_size=3)
    assert not (tmp_path / "o").exists()


def test_medmnist_split_is_kept_through_cleaning(tmp_path: Path) -> None:
    images, labels = make_images(90, size=16)
    train_images = np.concatenate([images[:60], images[:2]])  # two exact duplicates inside train
    np.savez(
        tmp_path / "m.npz",
        train_images=train_images,
        train_labels=np.concatenate([labels[:60], labels[:2]])[:, None],
        val_images=images[60:72],
        val_labels=labels[60:72, None],
        test_images=images[72:],
        test_labels=labels[72:, None],
    )
    prepared = prepare_data(tmp_path / "m.npz", tmp_path / "p", image_size=16)
    assert (len(prepared.y_train), len(prepared.y_val), len(prepared.y_test)) == (60, 12, 18)
    assert np.array_equal(prepared.x_val, images[60:72])
    assert prepared.manifest["predefined_split"] is True
    assert prepared.manifest["removed"][0]["kind"] == "duplicate"
    assert prepared.manifest["removed"][0]["indices"] == [60, 61]


def test_no_clean_keeps_everything(tmp_path: Path) -> None:
    images, labels = make_images(40, size=16)
    np.savez(
        tmp_path / "dup.npz",
        images=np.concatenate([images, images[:4]]),
        labels=np.concatenate([labels, labels[:4]]),
    )
    everything = prepare_data(tmp_path / "dup.npz", tmp_path / "a", image_size=16, clean=False)
    assert everything.manifest["n_kept"] == 44 and everything.manifest["removed"] == []
    assert len(everything.y_train) + len(everything.y_val) + len(everything.y_test) == 44
    kept = prepare_data(tmp_path / "dup.npz", tmp_path / "b", image_size=16)
    assert kept.manifest["n_kept"] == 40


def test_too_few_after_cleaning_says_so(tmp_path: Path) -> None:
    images, labels = make_images(48, size=16)
    keep = labels != 7
    x = np.concatenate(
        [images[keep], np.repeat(images[7:8], 5, 0)]
    )  # platelet: 5 copies of one image
    y = np.concatenate([labels[keep], np.full(5, 7)])
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    with pytest.raises(DataError) as info:
        prepare_data(tmp_path / "d.npz", tmp_path / "p", image_size=16)
    message = str(info.value)
    assert (
        "class 'platelet' has 0 image(s)" in message
        and "after cleaning removed 5 images" in message
    )
    assert "\n" not in message and not (tmp_path / "p").exists()
    prepare_data(tmp_path / "d.npz", tmp_path / "p", image_size=16, clean=False)


def test_concurrent_writer_loses_gracefully(tmp_path: Path) -> None:
    from blood_automl.data.prepare import _write_atomically

    data = _data(tmp_path)
    out = tmp_path / "p"
    first = prepare_data(data, out, image_size=16)
    assert _write_atomically(out, first.arrays(), first.manifest) is None  # out already complete
    assert _no_temp_dirs(tmp_path)
    assert load_prepared(out).fingerprint == first.fingerprint
