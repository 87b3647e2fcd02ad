"""Hostile input for evaluate: missing or unsafe exports, unlabelled or other-class data, bad --out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl import __version__
from conftest import make_images
from hostile.harness import Case, Ctx, param, run_case

pytestmark = pytest.mark.slow


def evaluate_missing_export(ctx: Ctx) -> list[str]:
    return ["evaluate", "exports/nope", ctx.good_npz()]


def evaluate_model_with_code(ctx: Ctx) -> list[str]:
    return ["evaluate", ctx.export("lambda"), ctx.good_npz()]


def evaluate_other_class_names(ctx: Ctx) -> list[str]:
    images, _ = make_images(4)
    labels = np.array(["basophil", "blast", "basophil", "blast"])
    return ["evaluate", ctx.export("good"), ctx.npz("other.npz", images=images, labels=labels)]


def evaluate_too_few_class_folders(ctx: Ctx) -> list[str]:
    images, _ = make_images(4)
    for i, name in enumerate(["basophil", "basophil", "eosinophil", "eosinophil"]):
        (ctx.tmp / "classes" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(ctx.tmp / "classes" / name / f"{i}.png")
    return ["evaluate", ctx.export("good"), "classes"]


def evaluate_unlabelled_npz(ctx: Ctx) -> list[str]:
    images, _ = make_images(4)
    return ["evaluate", ctx.export("good"), ctx.npz("images.npz", images=images)]


def evaluate_unlabelled_folder(ctx: Ctx) -> list[str]:
    images, _ = make_images(2)
    (ctx.tmp / "flat").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(ctx.tmp / "flat" / f"{i}.png")
    return ["evaluate", ctx.export("good"), "flat"]


def evaluate_wrong_image_size(ctx: Ctx) -> list[str]:
    return ["evaluate", ctx.export("good"), ctx.good_npz(size=64)]


def evaluate_batch_size_zero(ctx: Ctx) -> list[str]:
    return ["evaluate", ctx.export("good"), ctx.good_npz(), "--batch-size", "0"]


def evaluate_out_not_ours(ctx: Ctx) -> list[str]:
    ctx.text("evaluations/good/thesis.tex", "my thesis\n")
    return ["evaluate", ctx.export("good"), ctx.good_npz()]


def evaluate_out_earlier_evaluation(ctx: Ctx) -> list[str]:
    marker = json.dumps({"kind": "evaluation", "version": __version__})
    ctx.text("evaluations/good/.blood-automl-evaluation", marker)
    ctx.text("evaluations/good/metrics.json", "{}\n")
    return ["evaluate", ctx.export("good"), ctx.good_npz()]


def evaluate_out_holds_an_export(ctx: Ctx) -> list[str]:
    ctx.text("exports/other/.blood-automl-export", json.dumps({"kind": "export"}))
    ctx.text("exports/other/metrics.json", "{}\n")
    return ["evaluate", ctx.export("good"), ctx.good_npz(), "--out", "exports/other"]


def evaluate_out_is_the_export(ctx: Ctx) -> list[str]:
    model = ctx.export("good")
    return ["evaluate", model, ctx.good_npz(), "--out", f"{model}/evaluation"]


def evaluate_out_is_the_data(ctx: Ctx) -> list[str]:
    images, _ = make_images(2)
    for i, name in enumerate(["basophil", "eosinophil"]):
        (ctx.tmp / "classes" / name).mkdir(parents=True)
        Image.fromarray(images[i]).save(ctx.tmp / "classes" / name / f"{i}.png")
    return ["evaluate", ctx.export("good"), "classes", "--out", "classes"]


CASES = [
    Case("evaluate-missing-export", evaluate_missing_export, "does not exist", "refit-best"),
    Case("evaluate-model-with-code", evaluate_model_with_code, "safe mode refuses", "refit-best"),
    Case(
        "evaluate-other-class-names",
        evaluate_other_class_names,
        "extra 'blast'",
        "name the classes",
    ),
    Case(
        "evaluate-too-few-class-folders",
        evaluate_too_few_class_folders,
        "missing 'erythroblast', 'ig'",
        "name the classes",
    ),
    Case("evaluate-unlabelled-npz", evaluate_unlabelled_npz, "has no labels", "class folders"),
    Case("evaluate-unlabelled-folder", evaluate_unlabelled_folder, "has no labels", "'labels'"),
    Case("evaluate-wrong-image-size", evaluate_wrong_image_size, "not 96x96", "--resize"),
    Case("evaluate-batch-size-zero", evaluate_batch_size_zero, "--batch-size", ">= 1"),
    Case("evaluate-out-not-ours", evaluate_out_not_ours, "did not make it", "choose another --out"),
    Case(
        "evaluate-out-earlier-evaluation",
        evaluate_out_earlier_evaluation,
        "already exists",
        "--overwrite",
    ),
    Case(
        "evaluate-out-holds-an-export",
        evaluate_out_holds_an_export,
        "holds a blood-automl export, not an evaluation",
        "choose another --out",
    ),
    Case("evaluate-out-in-the-export", evaluate_out_is_the_export, "overlaps", "another --out"),
    Case("evaluate-out-is-the-data", evaluate_out_is_the_data, "overlaps", "another --out"),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
