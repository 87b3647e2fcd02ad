"""evaluate: an export scored on labelled data, its folder, the drift warning, its refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl.data import PBC_CLASS_NAMES
from blood_automl.errors import DataError
from blood_automl.export.bundle import DATA_SUMMARY_FILE
from blood_automl.export.drift import shift_warning, summarize
from blood_automl.export.evaluate import evaluate_export
from blood_automl.outputs import read_marker
from conftest import make_images
from search.conftest import run_cli
from search.test_predict import BLUE, GREEN, RED, _images, _tiny_model

NAMES = list(PBC_CLASS_NAMES)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny colour model of test_predict (an export without training-image statistics)."""
    folder = tmp_path_factory.mktemp("exports") / "colours"
    folder.mkdir()
    _tiny_model(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"class_names": NAMES, "image_size": 96}))
    return folder


PINK = (200, 120, 170)


def _labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _images([RED, GREEN, BLUE, BLUE, RED, GREEN])
    labels = np.array([0, 1, 2, 0, 0, 3])  # two of six wrong
    np.savez(path, images=images, labels=labels, class_names=np.array(NAMES))
    return images, labels


def test_metrics_are_those_computed_directly_and_the_folder_holds_them(
    export: Path, tmp_path: Path
) -> None:
    import keras

    from blood_automl.trainer import compute_metrics

    images, labels = _labelled(tmp_path / "d.npz")
    out = tmp_path / "eval"
    result = evaluate_export(export, tmp_path / "d.npz", out=out)

    model = keras.saving.load_model(export / "model.keras")
    expected = compute_metrics(labels, model.predict_on_batch(images.astype(np.float32)), NAMES)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "n", "per_class", "confusion_matrix"):
        assert result.metrics[key] == expected[key], key
    assert result.metrics["accuracy"] == pytest.approx(4 / 6)
    assert "tta" not in result.metrics and result.warning is None

    assert result.out == out and read_marker(out) == "evaluation"
    assert sorted(p.name for p in out.iterdir()) == [
        ".blood-automl-evaluation",
        "confusion_matrix.png",
        "metrics.json",
        "per_class.csv",
    ]
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["accuracy"] == result.metrics["accuracy"]
    assert stored["confusion_matrix"] == expected["confusion_matrix"]
    with open(out / "per_class.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == NAMES
    basophil = expected["per_class"]["basophil"]
    assert float(rows[0]["recall"]) == pytest.approx(basophil["recall"], abs=1e-4)
    assert int(rows[0]["support"]) == basophil["support"] == 3
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_folder_tta_and_class_folders(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = tmp_path / "classes"
    for name, colours in (("basophil", [RED, RED]), ("erythroblast", [BLUE, GREEN])):
        (classes / name).mkdir(parents=True)
        for i, image in enumerate(_images(colours)):
            Image.fromarray(image).save(classes / name / f"{i}.png")
    for name in NAMES:  # every class of the model present (empty folders hold no images)
        (classes / name).mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    # only two class folders hold images: the other six are missing
    with pytest.raises(
        DataError, match=r"missing 'eosinophil', 'immature granulocytes'.*name the classes"
    ):
        evaluate_export(export, classes)
    for name in NAMES[1:2] + NAMES[3:]:
        Image.fromarray(_images([GREEN])[0]).save(classes / name / "g.png")
    result = evaluate_export(export / "model.keras", classes, tta=True)
    assert result.out == Path("evaluations") / "colours"
    assert (tmp_path / "evaluations" / "colours" / "metrics.json").is_file()
    assert result.metrics["n"] == 10
    # the pooled colour model does not change under rotation or mirroring
    assert result.metrics["tta"] == {
        k: pytest.approx(result.metrics[k]) for k in ("accuracy", "balanced_accuracy", "macro_f1")
    }


def test_data_with_other_class_names_is_refused(export: Path, tmp_path: Path) -> None:
    names = np.array(["basophil", "blast", "eosinophil"])
    np.savez(
        tmp_path / "d.npz", images=_images([RED, RED]), labels=np.array([0, 1]), class_names=names
    )
    with pytest.raises(DataError) as e:
        evaluate_export(export, tmp_path / "d.npz", out=tmp_path / "eval")
    line = str(e.value)
    assert "extra 'blast'" in line and "missing 'erythroblast'" in line and "\n" not in line
    np.savez(tmp_path / "s.npz", images=_images([RED, RED]), labels=np.array(["blast", "ig"]))
    with pytest.raises(DataError, match=r"missing .*extra 'blast', 'ig'"):
        evaluate_export(export, tmp_path / "s.npz", out=tmp_path / "eval")
    np.savez(tmp_path / "u.npz", images=_images([RED]))
    with pytest.raises(DataError, match=r"has no labels.*class folders"):
        evaluate_export(export, tmp_path / "u.npz", out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


# -- the drift summary ----------------------------------------------------------------------


def test_no_warning_on_a_same_distribution_half_and_one_on_shifted_images(
    pbc_small: dict[str, np.ndarray],
) -> None:
    images = pbc_small["images"]
    order = np.random.default_rng(0).permutation(len(images))
    half, other = images[order[: len(order) // 2]], images[order[len(order) // 2 :]]
    training = summarize(half)
    assert shift_warning(training, other) is None
    for k in (1, 10, 100):  # small sets of the same kind are not warned about either
        assert shift_warning(training, other[:k]) is None
    for i, c in enumerate(PBC_CLASS_NAMES):  # nor a set of one class only
        assert (
            shift_warning(training, other[pbc_small["labels"][order[len(order) // 2 :]] == i])
            is None
        ), c

    swapped = shift_warning(training, other[..., ::-1])
    assert (
        swapped is not None
        and "blue channel" in swapped
        and "training standard deviations above" in swapped
    )
    darker = shift_warning(training, (other * 0.6).astype(np.uint8))
    assert darker is not None and "below" in darker and "check the stain and scanner" in darker


def test_drift_on_synthetic_images_and_exports_without_a_summary() -> None:
    images, _ = make_images(400, size=32, seed=2)
    training = summarize(images[:200])
    assert json.loads(json.dumps(training)) == training  # plain JSON
    assert training["images"] == 200 and set(training["image_mean_percentiles"]) == {
        "5",
        "50",
        "95",
    }
    np.testing.assert_allclose(
        training["pixel_mean"], images[:200].reshape(-1, 3).mean(axis=0), atol=1e-3
    )
    np.testing.assert_allclose(
        training["pixel_std"], images[:200].reshape(-1, 3).std(axis=0), atol=1e-3
    )
    assert shift_warning(training, images[200:]) is None
    assert shift_warning(None, images[200:]) is None  # an older export: nothing to compare
    flat = images[200:] // 4 + 100  # same mean colour region, far less contrast and darker
    assert shift_warning(training, flat) is not None


def test_predict_and_evaluate_warn_on_stderr_and_still_succeed(
    export: Path, tmp_path: Path
) -> None:
    tinted = tmp_path / "tinted"
    tinted.mkdir()
    for name in ("model.keras", "config.json"):
        (tinted / name).write_bytes((export / name).read_bytes())
    (tinted / DATA_SUMMARY_FILE).write_text(json.dumps(summarize(_images([PINK] * 30))))
    np.savez(tmp_path / "pink.npz", images=_images([PINK] * 12), labels=np.zeros(12, int))
    dark = (_images([PINK] * 12) * 0.6).astype(np.uint8)
    np.savez(tmp_path / "dark.npz", images=dark, labels=np.zeros(12, int))

    done = run_cli("predict", "tinted", "pink.npz", cwd=tmp_path)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    done = run_cli("predict", "tinted", "dark.npz", "--out", "d.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [x for x in done.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "training standard deviations below" in warnings[0]
    assert "error:" not in done.stderr and (tmp_path / "d.csv").is_file()

    done = run_cli("evaluate", "tinted", "dark.npz", "--tta", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len([x for x in done.stderr.splitlines() if x.startswith("warning:")]) == 1
    assert "12 images: accuracy" in done.stdout
    assert "with test-time augmentation: accuracy" in done.stdout
    assert "basophil" in done.stdout and "evaluations/tinted" in done.stdout
    stored = json.loads((tmp_path / "evaluations" / "tinted" / "metrics.json").read_text())
    assert stored["data_shift_warning"].startswith("these 12 images are unlike")

    # an export without the statistics (made before they were stored): no warning, no error
    done = run_cli("predict", str(export), "dark.npz", "--out", "o.csv", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


# -- refusals through the command line -----------------------------------------------------


def _one_error(result: object) -> str:
    import subprocess

    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return str(lines[0])


def test_bad_inputs_are_one_error_line_and_write_nothing(export: Path, tmp_path: Path) -> None:
    _labelled(tmp_path / "d.npz")
    np.savez(
        tmp_path / "other.npz",
        images=_images([RED, BLUE]),
        labels=np.array(["basophil", "blast"]),
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    line = _one_error(run_cli("evaluate", str(tmp_path / "nope"), "d.npz", cwd=tmp_path))
    assert "does not exist" in line and "refit-best" in line
    line = _one_error(run_cli("evaluate", str(export), "other.npz", cwd=tmp_path))
    assert "extra 'blast'" in line and "missing 'eosinophil'" in line and "name the classes" in line
    line = _one_error(run_cli("evaluate", str(export), "d.npz", "--out", str(export), cwd=tmp_path))
    assert "overlaps" in line and "choose another --out" in line
    line = _one_error(run_cli("evaluate", str(export), "d.npz", "--batch-size", "0", cwd=tmp_path))
    assert "--batch-size" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_digit_string_labels_index_the_model_classes(export: Path, tmp_path: Path) -> None:
    letters = tmp_path / "letters"  # a model whose classes are not the PBC names
    letters.mkdir()
    (letters / "model.keras").write_bytes((export / "model.keras").read_bytes())
    config = {"class_names": list("abcdefgh"), "image_size": 96}
    (letters / "config.json").write_text(json.dumps(config))
    np.savez(tmp_path / "d.npz", images=_images([RED, BLUE]), labels=np.array(["0", "2"]))
    result = evaluate_export(letters, tmp_path / "d.npz", out=tmp_path / "eval")
    assert result.metrics["accuracy"] == 1.0 and result.metrics["n"] == 2
