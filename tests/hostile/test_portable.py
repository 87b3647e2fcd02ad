"""Hostile input for predict and evaluate on portable model files (model.onnx, model.tflite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hostile.harness import CLASS_NAMES, Case, Ctx, param, run_case

pytestmark = pytest.mark.slow

_CONFIG = json.dumps({"class_names": CLASS_NAMES, "image_size": 96})


def _model(ctx: Ctx, name: str, content: bytes, config: bool = True) -> str:
    """``export/<name>`` holding ``content``, with a good config.json beside it unless not."""
    folder = ctx.tmp / "export"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    if config:
        ctx.text("export/config.json", _CONFIG)
    return f"export/{name}"


def _without(ctx: Ctx, module: str) -> None:
    """Make ``import module`` fail in the command's process, as when it is not installed."""
    shadow = ctx.tmp.parent / f"{ctx.tmp.name}-shadow"
    (shadow / module).mkdir(parents=True)
    (shadow / module / "__init__.py").write_text(f"raise ImportError('no module {module}')\n")
    path = os.environ.get("PYTHONPATH", "")
    ctx.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shadow), path) if p)


def predict_onnx_corrupt(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.onnx", b"\x08\x07 not a protobuf" * 40), ctx.good_npz()]


def predict_onnx_empty(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.onnx", b""), ctx.good_npz()]


def predict_tflite_corrupt(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.tflite", b"TFL3 but nothing else" * 40), ctx.good_npz()]


def predict_tflite_is_text(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.tflite", b"hello\n"), ctx.good_npz()]


def predict_onnx_without_config(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.onnx", b"junk", config=False), ctx.good_npz()]


def predict_tflite_without_config(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.tflite", b"junk", config=False), ctx.good_npz()]


def predict_unknown_suffix(ctx: Ctx) -> list[str]:
    return ["predict", _model(ctx, "model.pt", b"torch weights"), ctx.good_npz()]


def predict_onnx_runtime_missing(ctx: Ctx) -> list[str]:
    _without(ctx, "onnxruntime")
    return ["predict", _model(ctx, "model.onnx", b"junk"), ctx.good_npz()]


def predict_litert_runtime_missing(ctx: Ctx) -> list[str]:
    _without(ctx, "ai_edge_litert")
    return ["predict", _model(ctx, "model.tflite", b"junk"), ctx.good_npz()]


def evaluate_onnx_corrupt(ctx: Ctx) -> list[str]:
    return ["evaluate", _model(ctx, "model.onnx", b"\x00\x01\x02" * 100), ctx.good_npz()]


def evaluate_tflite_corrupt(ctx: Ctx) -> list[str]:
    return ["evaluate", _model(ctx, "model.tflite", b"\x00\x01\x02" * 100), ctx.good_npz()]


def evaluate_unknown_suffix(ctx: Ctx) -> list[str]:
    return ["evaluate", _model(ctx, "model.h5", b"HDF5 weights"), ctx.good_npz()]


_LOAD = "exported by `blood-automl refit-best`"
_INSTALL = 'pip install "blood-automl[export]"'

CASES = [
    Case("predict-onnx-corrupt", predict_onnx_corrupt, "cannot be loaded by onnxruntime", _LOAD),
    Case("predict-onnx-empty", predict_onnx_empty, "cannot be loaded by onnxruntime", _LOAD),
    Case(
        "predict-tflite-corrupt",
        predict_tflite_corrupt,
        "cannot be loaded by ai_edge_litert",
        _LOAD,
    ),
    Case(
        "predict-tflite-is-text",
        predict_tflite_is_text,
        "cannot be loaded by ai_edge_litert",
        _LOAD,
    ),
    Case("predict-onnx-without-config", predict_onnx_without_config, "no config.json", "folder"),
    Case(
        "predict-tflite-without-config", predict_tflite_without_config, "no config.json", "folder"
    ),
    Case(
        "predict-unknown-suffix", predict_unknown_suffix, ".keras, .tflite or .onnx", "model.onnx"
    ),
    Case("predict-onnx-runtime-missing", predict_onnx_runtime_missing, "'onnxruntime'", _INSTALL),
    Case(
        "predict-litert-runtime-missing",
        predict_litert_runtime_missing,
        "'ai_edge_litert'",
        _INSTALL,
    ),
    Case("evaluate-onnx-corrupt", evaluate_onnx_corrupt, "cannot be loaded by onnxruntime", _LOAD),
    Case(
        "evaluate-tflite-corrupt",
        evaluate_tflite_corrupt,
        "cannot be loaded by ai_edge_litert",
        _LOAD,
    ),
    Case(
        "evaluate-unknown-suffix", evaluate_unknown_suffix, ".keras, .tflite or .onnx", "model.onnx"
    ),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
