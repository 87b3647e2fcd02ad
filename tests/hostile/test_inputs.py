"""Hostile and wrong input across the CLI: data files, space files, options, storages, studies, models."""

from __future__ import annotations

import json
import pickle
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import make_images
from hostile.harness import (
    CLASS_NAMES,
    SECRET,
    Case,
    Ctx,
    free_port,
    param,
    run_case,
)

pytestmark = pytest.mark.slow


class _OpensFileWhenUnpickled:
    """Pickles to ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def pickled_object_array(ctx: Ctx) -> list[str]:
    marker = ctx.tmp / "UNPICKLED"
    payload = _OpensFileWhenUnpickled(marker)
    pickle.loads(pickle.dumps(payload))  # the payload is live...
    assert marker.exists()
    marker.unlink()  # ...so blood-automl must never unpickle it
    images = np.empty(1, dtype=object)
    images[0] = payload
    name = ctx.npz("data.npz", images=images, labels=np.array([0]))
    ctx.never.append(marker)
    return ["inspect-data", name]


def zip_not_npz(ctx: Ctx) -> list[str]:
    with zipfile.ZipFile(ctx.tmp / "data.npz", "w") as z:
        z.writestr("README.txt", "cells")
        z.writestr("basophil/1.png", b"\x89PNG\r\n")
    return ["inspect-data", "data.npz"]


def truncated_npz(ctx: Ctx) -> list[str]:
    ctx.good_npz("whole.npz")
    whole = (ctx.tmp / "whole.npz").read_bytes()
    (ctx.tmp / "data.npz").write_bytes(whole[: len(whole) // 2])
    return ["inspect-data", "data.npz"]


def empty_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "data.npz").touch()
    return ["inspect-data", "data.npz"]


def npy_not_npz(ctx: Ctx) -> list[str]:
    with open(ctx.tmp / "data.npz", "wb") as f:
        np.save(f, np.zeros((2, 8, 8, 3), np.uint8))
    return ["inspect-data", "data.npz"]


def missing_labels(ctx: Ctx) -> list[str]:
    images, _ = make_images(16, size=32)
    return ["inspect-data", ctx.npz("data.npz", images=images)]


def labels_out_of_range(ctx: Ctx) -> list[str]:
    images, _ = make_images(16, size=32)
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=np.arange(16))]


def labels_mixed_type(ctx: Ctx) -> list[str]:
    images, _ = make_images(4, size=32)
    labels = np.array(["1", "basophil", "2", "monocyte"])
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels)]


def labels_too_few(ctx: Ctx) -> list[str]:
    images, labels = make_images(16, size=32)
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=labels[:15])]


def nan_in_float_images(ctx: Ctx) -> list[str]:
    images, labels = make_images(8, size=32)
    floats = images.astype(np.float32) / 255
    floats[5, 3, 4, 1] = np.nan
    return ["inspect-data", ctx.npz("data.npz", images=floats, labels=labels)]


def wrong_channel_count(ctx: Ctx) -> list[str]:
    images = np.zeros((8, 32, 32, 5), np.uint8)
    return ["inspect-data", ctx.npz("data.npz", images=images, labels=np.arange(8))]


def grayscale_without_convert(ctx: Ctx) -> list[str]:
    images, labels = make_images(8, size=32)
    return ["inspect-data", ctx.npz("data.npz", images=images[..., 0], labels=labels)]


def folder_with_unreadable_image(ctx: Ctx) -> list[str]:
    images, _ = make_images(4, size=32)
    for k, cls in enumerate(("basophil", "monocyte")):
        (ctx.tmp / "cells" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(images[2 * k + i]).save(ctx.tmp / "cells" / cls / f"{i}.png")
    (ctx.tmp / "cells" / "monocyte" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return ["inspect-data", "cells"]


def missing_data_path(ctx: Ctx) -> list[str]:
    return ["inspect-data", "no_such_data.npz"]


def image_size_too_small(ctx: Ctx) -> list[str]:
    return ["inspect-data", ctx.good_npz(), "--image-size", "4"]


def _search_space(ctx: Ctx, toml: str) -> list[str]:
    """``search`` with the space file ``toml`` on valid data and an existing store."""
    space = ctx.text("space.toml", toml)
    url = ctx.store()
    return [
        "search",
        "--data",
        ctx.good_npz(),
        "--space",
        space,
        "--storage",
        url,
        "--workers",
        "1",
    ]


def space_unknown_backbone(ctx: Ctx) -> list[str]:
    return _search_space(ctx, 'base = "gpu"\n[params.backbone]\nvalue = "ResNet9000"\n')


def space_empty_range(ctx: Ctx) -> list[str]:
    return _search_space(ctx, 'base = "gpu"\n[params.dropout]\nlow = 0.5\nhigh = 0.1\n')


def space_unknown_key(ctx: Ctx) -> list[str]:
    return _search_space(ctx, 'base = "smoke"\ncolour = "blue"\n')


def space_unknown_parameter(ctx: Ctx) -> list[str]:
    return _search_space(ctx, 'base = "gpu"\n[params.learning_rate]\nvalue = 0.01\n')


def space_toml_syntax_error(ctx: Ctx) -> list[str]:
    return _search_space(ctx, 'base = "smoke\n[params.dropout\nvalue = 0.1\n')


def space_smuggles_code_in_choices(ctx: Ctx) -> list[str]:
    toml = """base = "gpu"\n[params.activation]\nchoices = ["__import__('os').system('touch PWNED')"]\n"""
    return _search_space(ctx, toml)


def space_smuggles_code_as_float(ctx: Ctx) -> list[str]:
    toml = """base = "gpu"\n[params.dropout]\nvalue = "__import__('os').system('touch PWNED')"\n"""
    return _search_space(ctx, toml)


def space_file_missing(ctx: Ctx) -> list[str]:
    url = ctx.store()
    argv = ["search", "--data", ctx.good_npz(), "--space", "nothere.toml", "--storage", url]
    return [*argv, "--workers", "1"]


def unknown_preset(ctx: Ctx) -> list[str]:
    url = ctx.store()
    argv = ["search", "--data", ctx.good_npz(), "--preset", "bogus", "--storage", url]
    return [*argv, "--workers", "1"]


def preset_and_space(ctx: Ctx) -> list[str]:
    space = ctx.text("space.toml", 'base = "smoke"\n')
    url = ctx.store()
    argv = ["search", "--data", ctx.good_npz(), "--preset", "smoke", "--space", space]
    return [*argv, "--storage", url, "--workers", "1"]


def unknown_preset_fresh_folder(ctx: Ctx) -> list[str]:
    return ["search", "--data", ctx.good_npz(), "--preset", "bogus", "--workers", "1"]


def trials_zero(ctx: Ctx) -> list[str]:
    return ["search", "--data", ctx.good_npz(), "--trials", "0"]


def negative_timeout(ctx: Ctx) -> list[str]:
    return ["search", "--data", ctx.good_npz(), "--timeout", "-5"]


def unknown_objective(ctx: Ctx) -> list[str]:
    argv = ["search", "--data", ctx.good_npz(), "--objective", "auc", "--preset", "smoke"]
    return [*argv, "--weights", "none", "--no-clean", "--workers", "1"]


def unknown_sampler(ctx: Ctx) -> list[str]:
    argv = ["search", "--data", ctx.good_npz(), "--sampler", "cmaes", "--preset", "smoke"]
    return [*argv, "--weights", "none", "--no-clean", "--workers", "1"]


def storage_missing_driver(ctx: Ctx) -> list[str]:
    url = f"mysql+mysqldb://u:{SECRET}@127.0.0.1/db"
    return ["search", "--data", ctx.good_npz(), "--storage", url, "--workers", "1"]


def storage_unreachable(ctx: Ctx) -> list[str]:
    return [
        "refit-best",
        "--storage",
        f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:{free_port()}/db",
    ]


def storage_unparseable(ctx: Ctx) -> list[str]:
    return ["report", "--storage", "::not a database url::"]


def storage_async_driver(ctx: Ctx) -> list[str]:
    url = f"postgresql+asyncpg://u:{SECRET}@127.0.0.1/db"
    return ["dashboard", "--storage", url, "--port", str(free_port())]


def storage_under_a_file(ctx: Ctx) -> list[str]:
    # We run as root, so a chmod'ed read-only folder would not stop writes: a folder that
    # cannot be created (its parent is a regular file) stands in for a read-only studies folder.
    ctx.text("afile", "a regular file, not a folder\n")
    url = f"sqlite:///{ctx.tmp / 'afile' / 'studies.db'}"
    return ["search", "--data", ctx.good_npz(), "--storage", url, "--workers", "1"]


def storage_not_sqlite(ctx: Ctx) -> list[str]:
    ctx.text("notes.db", "my notes, not a database\n")
    return ["report", "--storage", f"sqlite:///{ctx.tmp / 'notes.db'}"]


def refit_without_any_store(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope"]


def refit_unknown_study(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--storage", ctx.store("kept")]


def refit_no_completed_trial(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "empty", "--storage", ctx.store("empty")]


def refit_no_completed_trial_plain_optuna(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "empty", "--storage", ctx.store("empty", plain=True)]


def refit_unknown_trial(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "empty", "--storage", ctx.store("empty"), "--trial", "7"]


def report_no_completed_trial(ctx: Ctx) -> list[str]:
    return ["report", "--study", "empty", "--storage", ctx.store("empty")]


def report_out_exists(ctx: Ctx) -> list[str]:
    ctx.text("mine/notes.txt", "keep me\n")
    return ["report", "--study", "empty", "--storage", ctx.store("empty"), "--out", "mine"]


def report_bad_study_name(ctx: Ctx) -> list[str]:
    return ["report", "--study", "../../etc"]


def fingerprint_mismatch(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    images, labels = make_images(96, size=96, seed=7)
    other = ctx.npz("other.npz", images=images, labels=labels)
    argv = ["search", "--data", other, "--study", found.study, "--storage", found.url]
    return [*argv, "--weights", "none", "--no-clean", "--workers", "1"]


def refit_out_exists(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    ctx.text("exports/fx/model.keras", "an earlier export\n")
    argv = ["refit-best", "--study", found.study, "--storage", found.url]
    return [*argv, "--out", "exports/fx"]


def predict_model_not_keras(ctx: Ctx) -> list[str]:
    ctx.text("export/model.keras", "this is a text file\n")
    ctx.text("export/config.json", json.dumps({"class_names": CLASS_NAMES, "image_size": 96}))
    return ["predict", "export", ctx.good_npz()]


def predict_model_junk_zip(ctx: Ctx) -> list[str]:
    return ["predict", ctx.export("junk"), ctx.good_npz()]


def predict_model_with_code(ctx: Ctx) -> list[str]:
    return ["predict", ctx.export("lambda"), ctx.good_npz()]


def predict_model_without_config(ctx: Ctx) -> list[str]:
    model = ctx.export("good")
    (ctx.tmp / model / "config.json").unlink()
    return ["predict", model, ctx.good_npz()]


def predict_wrong_image_size(ctx: Ctx) -> list[str]:
    return ["predict", ctx.export("good"), ctx.good_npz(size=64)]


def predict_out_exists(ctx: Ctx) -> list[str]:
    ctx.text("predictions.csv", "index,source\n")
    return ["predict", ctx.export("good"), ctx.good_npz()]


def _export_with_config(ctx: Ctx, **changes: Any) -> str:
    model = ctx.export("good")
    config = json.loads((ctx.tmp / model / "config.json").read_text())
    (ctx.tmp / model / "config.json").write_text(json.dumps({**config, **changes}))
    return model


def predict_config_huge_image_size(ctx: Ctx) -> list[str]:
    # Resizing to a million pixels a side would take the machine's memory (killed, no message).
    model = _export_with_config(ctx, image_size=10**6)
    return ["predict", model, ctx.good_npz(), "--resize"]


def predict_config_endless_class_names(ctx: Ctx) -> list[str]:
    # A million names in the error line would flood the terminal.
    return ["predict", _export_with_config(ctx, class_names=["a"] * 10**6), ctx.good_npz()]


def _short_error_line(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    assert len(result.stderr) < 1000, f"{len(result.stderr)} characters of error"


def predict_batch_size_zero(ctx: Ctx) -> list[str]:
    return ["predict", ctx.export("good"), ctx.good_npz(), "--batch-size", "0"]


CASES = [
    # data files and folders
    Case("pickled-object-array", pickled_object_array, "object array", "plain numeric"),
    Case("zip-not-npz", zip_not_npz, "not an .npz", "np.savez"),
    Case("truncated-npz", truncated_npz, "corrupt or truncated", "re-create"),
    Case("empty-file", empty_file, "is an empty file", "re-create"),
    Case("npy-not-npz", npy_not_npz, "single .npy array", "np.savez"),
    Case("missing-labels", missing_labels, "missing array(s) 'labels'", "save np.savez"),
    Case("labels-out-of-range", labels_out_of_range, "in [0, 8), but got 8", "class_names"),
    Case("labels-mixed-type", labels_mixed_type, "mixes integers and names", "use either"),
    Case("labels-too-few", labels_too_few, "length mismatch", "one label per image"),
    Case("nan-in-float-images", nan_in_float_images, "non-finite value (nan)", "fix or drop"),
    Case("wrong-channel-count", wrong_channel_count, "3 colour channels", "save RGB"),
    Case("grayscale-without-convert", grayscale_without_convert, "grayscale", "--convert"),
    Case(
        "folder-unreadable-image", folder_with_unreadable_image, "broken.png", "remove or replace"
    ),
    Case("data-path-missing", missing_data_path, "no such file or folder", "give an .npz"),
    Case("image-size-too-small", image_size_too_small, "image size must be in", "--image-size 96"),
    # space files and search options
    Case("space-unknown-backbone", space_unknown_backbone, "ResNet9000", "choose one of"),
    Case("space-empty-range", space_empty_range, "empty range", "make low <= high"),
    Case("space-unknown-key", space_unknown_key, "colour is not a known key", "use base"),
    Case("space-unknown-parameter", space_unknown_parameter, "learning_rate", "use one of"),
    Case("space-toml-syntax-error", space_toml_syntax_error, "TOML syntax error", "fix the syntax"),
    Case("space-code-in-choices", space_smuggles_code_in_choices, "__import__", "choose one of"),
    Case("space-code-as-float", space_smuggles_code_as_float, "must be a number", "use a number"),
    Case("space-file-missing", space_file_missing, "no such space file", "check the path"),
    Case("unknown-preset", unknown_preset, "'bogus' is neither a preset", "use one of"),
    Case("preset-and-space", preset_and_space, "--preset or --space", "not both"),
    Case(
        "unknown-preset-fresh-folder",
        unknown_preset_fresh_folder,
        "'bogus' is neither a preset",
        "use one of",
    ),
    Case("trials-zero", trials_zero, "--trials", "must be at least 1"),
    Case("negative-timeout", negative_timeout, "--timeout", "must be a positive number"),
    Case(
        "unknown-objective",
        unknown_objective,
        "'auc'",
        "give one of those with --objective",
    ),
    Case(
        "unknown-sampler",
        unknown_sampler,
        "'cmaes'",
        "give one of those with --sampler",
    ),
    # study storages
    Case("storage-missing-driver", storage_missing_driver, "'MySQLdb'", "pip install mysqlclient"),
    Case(
        "storage-unreachable",
        storage_unreachable,
        "cannot connect",
        "check that the server runs",
        needs_psycopg2=True,
    ),
    Case("storage-unparseable", storage_unparseable, "cannot read the storage URL", "use e.g."),
    Case("storage-async-driver", storage_async_driver, "asyncio driver", "name a plain driver"),
    Case("storage-under-a-file", storage_under_a_file, "is a file, not a folder", "choose another"),
    Case("storage-not-sqlite", storage_not_sqlite, "is not a SQLite database", "choose another"),
    # studies
    Case("refit-no-store", refit_without_any_store, "no study storage", "run blood-automl search"),
    Case("refit-unknown-study", refit_unknown_study, "'nope' not found", "give --study one of"),
    Case("refit-no-completed", refit_no_completed_trial, "no completed trial", "run blood-automl"),
    Case(
        "refit-no-completed-plain-optuna-store",
        refit_no_completed_trial_plain_optuna,
        "no completed trial",
        "run blood-automl",
    ),
    Case("refit-unknown-trial", refit_unknown_trial, "has no trial 7", "give a trial number"),
    Case("report-no-completed", report_no_completed_trial, "nothing to report", "let blood-automl"),
    Case("report-out-exists", report_out_exists, "did not make it", "choose another --out"),
    Case("report-bad-study-name", report_bad_study_name, "is not allowed", "use 1-128 letters"),
    Case("data-fingerprint-differs", fingerprint_mismatch, "different data", "new --study"),
    Case("refit-out-exists", refit_out_exists, "already exists", "choose another --out"),
    # exported models for predict
    Case("predict-model-not-keras", predict_model_not_keras, "is not a Keras model", "refit-best"),
    Case(
        "predict-model-junk-zip",
        predict_model_junk_zip,
        "not a Keras model that can be loaded",
        "refit-best",
    ),
    Case("predict-model-with-code", predict_model_with_code, "safe mode refuses", "refit-best"),
    Case("predict-no-config", predict_model_without_config, "no config.json", "refit-best"),
    Case("predict-wrong-image-size", predict_wrong_image_size, "not 96x96", "--resize"),
    Case("predict-out-exists", predict_out_exists, "predictions.csv exists", "--overwrite"),
    Case("predict-batch-size-zero", predict_batch_size_zero, "--batch-size", ">= 1"),
    Case(
        "predict-config-huge-image-size",
        predict_config_huge_image_size,
        "'image_size' must be a whole number of pixels in [8, 1024]",
        "re-export",
    ),
    Case(
        "predict-config-endless-class-names",
        predict_config_endless_class_names,
        "'class_names' must list at least 2 distinct",
        "re-export",
        check=_short_error_line,
    ),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
