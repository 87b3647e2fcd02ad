"""Predict tests with a tiny real Keras model: npz, image folders, class folders, refusals."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl.data import PBC_CLASS_NAMES
from blood_automl.errors import ConfigError, DataError
from blood_automl.export.predict import predict_images

RED, GREEN, BLUE = (200, 10, 10), (10, 200, 10), (10, 10, 200)


def _tiny_model(path: Path, image_size: int = 96) -> None:
    """Raw 0-255 RGB in; class 0, 1, 2 for a mostly red, green, blue image (8 classes out)."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(shape=(image_size, image_size, 3)),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, activation="softmax"),
        ]
    )
    kernel = np.zeros((3, 8), dtype="float32")
    kernel[0, 0] = kernel[1, 1] = kernel[2, 2] = 10.0
    model.layers[-1].set_weights([kernel, np.zeros(8, dtype="float32")])
    model.save(path)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exports") / "study"
    folder.mkdir()
    _tiny_model(folder / "model.keras")
    config = {"class_names": list(PBC_CLASS_NAMES), "image_size": 96, "study": "study"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _images(colours: list[tuple[int, int, int]], size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.array(colours, dtype=np.int64)[:, None, None, :]
    noise = rng.integers(-5, 6, size=(len(colours), size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_npz_with_labels_gives_probabilities_and_the_accuracy(export: Path, tmp_path: Path) -> None:
    images = _images([RED, GREEN, BLUE, BLUE])
    labels = np.array([0, 1, 2, 0])  # the last is labelled basophil but is blue: 3 of 4 right
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    out = tmp_path / "p.csv"
    result = predict_images(export, tmp_path / "d.npz", out=out, batch_size=3)

    assert result.out == out and result.model == export / "model.keras"
    assert result.predicted.tolist() == [0, 1, 2, 2]
    assert result.accuracy == pytest.approx(3 / 4)
    assert result.counts["erythroblast"] == 2 and sum(result.counts.values()) == 4
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    rows = _rows(out)
    assert list(rows[0]) == [
        "index",
        "source",
        "true",
        "predicted",
        "confidence",
        *(f"p_{n}" for n in PBC_CLASS_NAMES),
    ]
    assert [r["source"] for r in rows] == [f"d.npz[{i}]" for i in range(4)]
    assert [r["true"] for r in rows] == ["basophil", "eosinophil", "erythroblast", "basophil"]
    assert [r["predicted"] for r in rows] == ["basophil", "eosinophil", "erythroblast"] * 1 + [
        "erythroblast"
    ]
    right = sum(r["true"] == r["predicted"] for r in rows)
    assert right / len(rows) == result.accuracy
    for r in rows:
        probs = [float(r[f"p_{n}"]) for n in PBC_CLASS_NAMES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert float(r["confidence"]) == max(probs) > 0.5


def test_npz_with_images_only_and_filenames(export: Path, tmp_path: Path) -> None:
    names = np.array(["a.png", "b.png"])
    np.savez(tmp_path / "d.npz", images=_images([GREEN, RED]), filenames=names)
    result = predict_images(export / "model.keras", tmp_path / "d.npz", out=tmp_path / "p.csv")
    assert result.accuracy is None and result.labels is None
    rows = _rows(tmp_path / "p.csv")
    assert "true" not in rows[0]
    assert [(r["index"], r["source"], r["predicted"]) for r in rows] == [
        ("0", "a.png", "eosinophil"),
        ("1", "b.png", "basophil"),
    ]


def test_folder_of_pngs_class_folders_and_one_image(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name, image in zip(
        ["x2.png", "x1.png", "x3.png"], _images([BLUE, RED, GREEN]), strict=True
    ):
        Image.fromarray(image).save(flat / name)
    (flat / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    result = predict_images(export, flat)  # default out: predictions.csv here
    assert result.out == Path("predictions.csv") and (tmp_path / "predictions.csv").is_file()
    assert result.sources == ("x1.png", "x2.png", "x3.png")
    assert [r["predicted"] for r in _rows(tmp_path / "predictions.csv")] == [
        "basophil",
        "erythroblast",
        "eosinophil",
    ]

    classes = tmp_path / "classes"
    for folder, colours in (("basophil", [RED, RED]), ("erythroblast", [BLUE, GREEN])):
        (classes / folder).mkdir(parents=True)
        for i, image in enumerate(_images(colours)):
            Image.fromarray(image).save(classes / folder / f"{i}.png")
    result = predict_images(export, classes, out=tmp_path / "c.csv")
    assert result.sources == (
        "basophil/0.png",
        "basophil/1.png",
        "erythroblast/0.png",
        "erythroblast/1.png",
    )
    assert result.labels is not None and result.labels.tolist() == [0, 0, 2, 2]
    assert result.accuracy == pytest.approx(3 / 4)

    result = predict_images(export, flat / "x3.png", out=tmp_path / "one.csv")
    assert len(result) == 1 and result.sources == ("x3.png",)
    assert result.predicted.tolist() == [1]


def test_string_labels_and_other_class_order_are_mapped(export: Path, tmp_path: Path) -> None:
    np.savez(
        tmp_path / "d.npz",
        images=_images([RED, BLUE]),
        labels=np.array([1, 0]),
        class_names=np.array(["erythroblast", "basophil"]),
    )
    result = predict_images(export, tmp_path / "d.npz", out=tmp_path / "p.csv")
    assert result.labels is not None and result.labels.tolist() == [0, 2]
    assert result.accuracy == 1.0
    np.savez(
        tmp_path / "u.npz",
        images=_images([RED]),
        labels=np.array(["blast"]),
        class_names=np.array(["blast", "x"]),
    )
    with pytest.raises(DataError, match=r"'blast'.*not classes of the model"):
        predict_images(export, tmp_path / "u.npz", out=tmp_path / "u.csv")


def test_wrong_size_is_refused_unless_resize(export: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "small.npz", images=_images([RED, BLUE], size=64))
    with pytest.raises(DataError, match=r"not 96x96 as the model expects.*is 64x64.*--resize") as e:
        predict_images(export, tmp_path / "small.npz", out=tmp_path / "p.csv")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "p.csv").exists()
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_images([RED])[0]).save(folder / "ok.png")
    Image.fromarray(_images([RED], size=120)[0][:, :100]).save(folder / "big.png")
    with pytest.raises(DataError, match=r"1 image\(s\) are not 96x96 .*big.png is 100x120"):
        predict_images(export, folder, out=tmp_path / "p.csv")
    result = predict_images(export, tmp_path / "small.npz", out=tmp_path / "p.csv", resize=True)
    assert result.predicted.tolist() == [0, 2]
    assert any("resized 2 images" in n for n in result.notes)


def test_files_that_are_not_models_are_refused(export: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=_images([RED]))
    config = (export / "config.json").read_text()
    cases = {
        "text": lambda p: p.write_text("this is not a model"),
        "zip": lambda p: zipfile.ZipFile(p, "w").close(),
        "empty": lambda p: p.write_bytes(b""),
    }
    for name, make in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        make(folder / "model.keras")
        (folder / "config.json").write_text(config)
        with pytest.raises(DataError, match=r"model.keras.*not a Keras model.*refit-best") as e:
            predict_images(folder, tmp_path / "d.npz", out=tmp_path / "p.csv")
        assert "\n" not in str(e.value), name
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(
        DataError, match=r"model.h5 is not a model file of refit-best \(.keras, .tflite or .onnx\)"
    ):
        predict_images(h5, tmp_path / "d.npz", out=tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"holds no model.keras"):
        predict_images(tmp_path, tmp_path / "d.npz", out=tmp_path / "p.csv")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.keras").write_bytes((export / "model.keras").read_bytes())
    with pytest.raises(DataError, match=r"no config.json beside the model"):
        predict_images(lonely, tmp_path / "d.npz", out=tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_lambda_models_are_refused_by_safe_mode(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(96, 96, 3)), keras.layers.Lambda(lambda x: x * 0.0)]
    )
    model.save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"class_names": ["a", "b"], "image_size": 96}))
    np.savez(tmp_path / "d.npz", images=_images([RED]))
    with pytest.raises(DataError, match="safe mode refuses"):
        predict_images(tmp_path, tmp_path / "d.npz", out=tmp_path / "p.csv")


def test_existing_csv_is_refused_unless_overwrite(export: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=_images([RED]))
    out = tmp_path / "p.csv"
    out.write_text("mine\n")
    with pytest.raises(ConfigError, match=r"p.csv exists; pass --overwrite"):
        predict_images(export, tmp_path / "d.npz", out=out)
    assert out.read_text() == "mine\n"
    predict_images(export, tmp_path / "d.npz", out=out, overwrite=True)
    assert _rows(out)[0]["predicted"] == "basophil"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "p.csv"]  # no temp file left
    with pytest.raises(ConfigError, match="--batch-size"):
        predict_images(export, tmp_path / "d.npz", out=out, overwrite=True, batch_size=0)


def test_bad_data_is_a_one_line_data_error(export: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        predict_images(export, tmp_path / "missing.npz", out=tmp_path / "p.csv")
    np.savez(tmp_path / "x.npz", pictures=_images([RED]))
    with pytest.raises(DataError, match=r"has no 'images' array \(found: pictures\)"):
        predict_images(export, tmp_path / "x.npz", out=tmp_path / "p.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        predict_images(export, empty, out=tmp_path / "p.csv")
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.new("L", (96, 96), 128).save(gray / "g.png")
    with pytest.raises(DataError, match=r"grayscale .*g.png.*--convert"):
        predict_images(export, gray, out=tmp_path / "p.csv")
    assert len(predict_images(export, gray, out=tmp_path / "p.csv", convert=True)) == 1


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx.png", "\rx.png"]


def test_file_names_that_look_like_formulas_are_quoted(export: Path, tmp_path: Path) -> None:
    names = np.array([*FORMULAS, "plain.png", "a=b.png"])
    np.savez(tmp_path / "d.npz", images=_images([RED] * len(names)), filenames=names)
    out = tmp_path / "p.csv"
    predict_images(export, tmp_path / "d.npz", out=out)
    sources = [r["source"] for r in _rows(out)]
    assert sources == [f"'{n}" for n in FORMULAS] + ["plain.png", "a=b.png"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(_images([BLUE])[0]).save(folder / "=1+1.png")
    Image.fromarray(_images([BLUE])[0]).save(folder / "@cmd.png")
    predict_images(export, folder, out=tmp_path / "f.csv")
    assert sorted(r["source"] for r in _rows(tmp_path / "f.csv")) == ["'=1+1.png", "'@cmd.png"]
    assert (tmp_path / "f.csv").stat().st_mode & 0o777 == 0o644


def test_class_names_that_look_like_formulas_are_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    _tiny_model(folder / "model.keras")
    names = ["=evil", *PBC_CLASS_NAMES[1:]]
    (folder / "config.json").write_text(json.dumps({"class_names": names, "image_size": 96}))
    np.savez(tmp_path / "d.npz", images=_images([RED]), labels=np.array([0]))
    predict_images(folder, tmp_path / "d.npz", out=tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        header, row = list(csv.reader(f))
    assert "p_=evil" in header  # the header cell starts with "p_": not a formula
    assert row[2:4] == ["'=evil", "'=evil"]  # true and predicted


def test_images_are_decoded_as_training_data_is(export: Path, tmp_path: Path) -> None:
    """16-bit PNGs are scaled over their full range with --convert, never clipped to white."""
    import os

    from blood_automl.export.predict import read_images

    folder = tmp_path / "sixteen"
    folder.mkdir()
    grey = np.linspace(0, 65535, 96 * 96).reshape(96, 96).astype(np.uint16)
    Image.fromarray(grey).save(folder / "a.png")
    assert Image.open(folder / "a.png").mode.startswith("I")

    with pytest.raises(DataError, match=r"16-bit.*--convert"):
        read_images(folder, 96, tuple(PBC_CLASS_NAMES))
    found = read_images(folder, 96, tuple(PBC_CLASS_NAMES), convert=True)
    image = np.asarray(found.images)[0]
    assert image.shape == (96, 96, 3)
    np.testing.assert_allclose(image[..., 0], grey / 65535 * 255, atol=0.5)  # not all 255
    assert any("16-bit" in note for note in found.notes)

    os.mkfifo(tmp_path / "pipe.png")  # opening it would block for ever
    with pytest.raises(DataError, match=r"pipe\.png.*FIFO"):
        read_images(tmp_path / "pipe.png", 96, tuple(PBC_CLASS_NAMES))
