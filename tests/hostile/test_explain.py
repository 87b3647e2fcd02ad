"""Hostile input for explain: missing, unsafe or unexplainable exports, bad data, bad options, bad --out."""

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


def explain_missing_export(ctx: Ctx) -> list[str]:
    return ["explain", "exports/nope", ctx.good_npz()]


def explain_model_with_code(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("lambda"), ctx.good_npz()]


def explain_junk_model(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("junk"), ctx.good_npz()]


def explain_portable_file(ctx: Ctx) -> list[str]:
    """An ONNX file with its config.json: predict takes it, Grad-CAM cannot (no gradients)."""
    import shutil

    folder = ctx.tmp / "portable"
    folder.mkdir()
    shutil.copy(ctx.tmp / ctx.export("good") / "config.json", folder / "config.json")
    (folder / "model.onnx").write_bytes(b"an onnx file")
    return ["explain", str(folder / "model.onnx"), ctx.good_npz()]


def explain_model_without_logits(ctx: Ctx) -> list[str]:
    """The tiny export pools the raw image into a softmax Dense: no logits, no feature map."""
    return ["explain", ctx.export("good"), ctx.good_npz()]


def explain_unlabelled_npz(ctx: Ctx) -> list[str]:
    images, _ = make_images(4)
    return ["explain", ctx.export("good"), ctx.npz("images.npz", images=images)]


def explain_unlabelled_folder(ctx: Ctx) -> list[str]:
    images, _ = make_images(2)
    (ctx.tmp / "flat").mkdir()
    for i in range(2):
        Image.fromarray(images[i]).save(ctx.tmp / "flat" / f"{i}.png")
    return ["explain", ctx.export("good"), "flat"]


def explain_other_class_names(ctx: Ctx) -> list[str]:
    images, _ = make_images(4)
    labels = np.array(["basophil", "blast", "basophil", "blast"])
    return ["explain", ctx.export("good"), ctx.npz("other.npz", images=images, labels=labels)]


def explain_wrong_image_size(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("good"), ctx.good_npz(size=64)]


def explain_per_class_zero(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("good"), ctx.good_npz(), "--per-class", "0"]


def explain_per_class_too_many(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("good"), ctx.good_npz(), "--per-class", "51"]


def explain_batch_size_zero(ctx: Ctx) -> list[str]:
    return ["explain", ctx.export("good"), ctx.good_npz(), "--batch-size", "0"]


def explain_out_is_the_export(ctx: Ctx) -> list[str]:
    model = ctx.export("good")
    return ["explain", model, ctx.good_npz(), "--out", model]


def explain_out_in_the_export(ctx: Ctx) -> list[str]:
    model = ctx.export("good")
    return ["explain", model, ctx.good_npz(), "--out", f"{model}/why"]


def explain_out_is_the_data(ctx: Ctx) -> list[str]:
    images, _ = make_images(2)
    for i, name in enumerate(["basophil", "eosinophil"]):
        (ctx.tmp / "classes" / name).mkdir(parents=True)
        Image.fromarray(images[i]).save(ctx.tmp / "classes" / name / f"{i}.png")
    return ["explain", ctx.export("good"), "classes", "--out", "classes"]


def explain_out_not_ours(ctx: Ctx) -> list[str]:
    ctx.text("explanations/good/thesis.tex", "my thesis\n")
    return ["explain", ctx.export("good"), ctx.good_npz()]


def explain_out_earlier_explanation(ctx: Ctx) -> list[str]:
    marker = json.dumps({"kind": "explanation", "version": __version__})
    ctx.text("explanations/good/.blood-automl-explanation", marker)
    ctx.text("explanations/good/explanations.csv", "index\n")
    return ["explain", ctx.export("good"), ctx.good_npz()]


def explain_out_holds_an_evaluation(ctx: Ctx) -> list[str]:
    ctx.text("evaluations/good/.blood-automl-evaluation", json.dumps({"kind": "evaluation"}))
    ctx.text("evaluations/good/metrics.json", "{}\n")
    return ["explain", ctx.export("good"), ctx.good_npz(), "--out", "evaluations/good"]


CASES = [
    Case("explain-missing-export", explain_missing_export, "does not exist", "refit-best"),
    Case("explain-model-with-code", explain_model_with_code, "safe mode refuses", "refit-best"),
    Case("explain-junk-model", explain_junk_model, "not a Keras model", "refit-best"),
    Case("explain-portable-file", explain_portable_file, "is a .onnx file", "its model.keras"),
    Case(
        "explain-model-without-logits",
        explain_model_without_logits,
        "has no 'logits' layer",
        "refit-best",
    ),
    Case("explain-unlabelled-npz", explain_unlabelled_npz, "has no labels", "class folders"),
    Case("explain-unlabelled-folder", explain_unlabelled_folder, "has no labels", "'labels'"),
    Case("explain-other-class-names", explain_other_class_names, "extra 'blast'", "name the"),
    Case("explain-wrong-image-size", explain_wrong_image_size, "not 96x96", "--resize"),
    Case("explain-per-class-zero", explain_per_class_zero, "--per-class", "--per-class 4"),
    Case("explain-per-class-too-many", explain_per_class_too_many, "but got 51", "--per-class 4"),
    Case("explain-batch-size-zero", explain_batch_size_zero, "--batch-size", ">= 1"),
    Case("explain-out-is-the-export", explain_out_is_the_export, "overlaps", "another --out"),
    Case("explain-out-in-the-export", explain_out_in_the_export, "overlaps", "another --out"),
    Case("explain-out-is-the-data", explain_out_is_the_data, "overlaps", "another --out"),
    Case("explain-out-not-ours", explain_out_not_ours, "did not make it", "choose another --out"),
    Case(
        "explain-out-earlier-explanation",
        explain_out_earlier_explanation,
        "already exists",
        "--overwrite",
    ),
    Case(
        "explain-out-holds-an-evaluation",
        explain_out_holds_an_evaluation,
        "holds a blood-automl evaluation, not an explanation",
        "choose another --out",
    ),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
