"""Output targets that must never be written or replaced: users' folders, devices, FIFOs, links."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from hostile.harness import Case, Ctx, param, run_case

pytestmark = pytest.mark.slow

Result = subprocess.CompletedProcess[str]


def _outside(ctx: Ctx) -> Path:
    """A folder beside the case's own, not watched: FIFOs and sockets cannot be snapshotted."""
    folder = ctx.tmp.parent / f"{ctx.tmp.name}-special"
    folder.mkdir(exist_ok=True)
    return folder


def _fifo(ctx: Ctx) -> str:
    path = _outside(ctx) / "pipe"
    os.mkfifo(path)
    return str(path)


def _still(kind: str, path: str) -> None:
    mode = os.lstat(path).st_mode
    test = {"fifo": stat.S_ISFIFO, "device": stat.S_ISCHR, "socket": stat.S_ISSOCK}[kind]
    assert test(mode), f"{path} is no longer a {kind}"


def _still_fifo(ctx: Ctx, result: Result) -> None:
    _still("fifo", str(_outside(ctx) / "pipe"))


def _devnull_intact(ctx: Ctx, result: Result) -> None:
    _still("device", "/dev/null")


def _thesis(ctx: Ctx, folder: str = "mydocs") -> str:
    ctx.text(f"{folder}/thesis.tex", "\\documentclass{book} % years of work\n")
    return folder


def _predict(ctx: Ctx, *out: str) -> list[str]:
    return ["predict", ctx.export("good"), ctx.good_npz(), "--out", *out]


def _refit(ctx: Ctx, *out: str) -> list[str]:
    found = ctx.searched()
    return ["refit-best", "--study", found.study, "--storage", found.url, "--out", *out]


def _report(ctx: Ctx, *out: str) -> list[str]:
    found = ctx.searched()
    return ["report", "--study", found.study, "--storage", found.url, "--out", *out]


def _sheet(ctx: Ctx, *sheet: str) -> list[str]:
    return ["inspect-data", ctx.good_npz(), "--sheet", *sheet]


# -- folders of the user --------------------------------------------------------------------


def refit_thesis_overwrite(ctx: Ctx) -> list[str]:
    return _refit(ctx, _thesis(ctx), "--overwrite")


def report_thesis_with_summary_overwrite(ctx: Ctx) -> list[str]:
    ctx.text("mydocs/summary.json", '{"chapter": 3}\n')  # a user's file of that name
    return _report(ctx, _thesis(ctx), "--overwrite")


def refit_over_a_report(ctx: Ctx) -> list[str]:
    ctx.text("rep/.blood-automl-report", json.dumps({"kind": "report", "version": "0.1.0"}))
    ctx.text("rep/summary.json", "{}\n")
    return _refit(ctx, "rep", "--overwrite")


def refit_out_dot(ctx: Ctx) -> list[str]:
    _thesis(ctx)
    return _refit(ctx, ".", "--overwrite")


def refit_out_parent(ctx: Ctx) -> list[str]:
    return _refit(ctx, "..", "--overwrite")


def report_out_dot_with_summary(ctx: Ctx) -> list[str]:
    ctx.text("summary.json", '{"mine": true}\n')
    return _report(ctx, ".", "--overwrite")


def refit_out_under_a_file(ctx: Ctx) -> list[str]:
    ctx.text("notes.txt", "my notes\n")
    return _refit(ctx, "notes.txt/export")


def refit_out_is_study_data(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    return _refit(ctx, str(found.folder / "store" / found.study / "data"), "--overwrite")


def report_out_in_study_folder(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    return _report(ctx, str(found.folder / "store" / found.study / "report"))


# -- files that are not regular files ---------------------------------------------------------


def predict_out_devnull_overwrite(ctx: Ctx) -> list[str]:
    return _predict(ctx, "/dev/null", "--overwrite")


def predict_out_fifo_overwrite(ctx: Ctx) -> list[str]:
    return _predict(ctx, _fifo(ctx), "--overwrite")


def predict_out_fifo(ctx: Ctx) -> list[str]:
    return _predict(ctx, _fifo(ctx))


def predict_out_socket_overwrite(ctx: Ctx) -> list[str]:
    path = _outside(ctx) / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the socket file stays
    return _predict(ctx, str(path), "--overwrite")


def _socket_intact(ctx: Ctx, result: Result) -> None:
    _still("socket", str(_outside(ctx) / "sock"))


def predict_out_link_to_device(ctx: Ctx) -> list[str]:
    (ctx.tmp / "out.csv").symlink_to("/dev/null")
    return _predict(ctx, "out.csv", "--overwrite")


def predict_out_under_proc(ctx: Ctx) -> list[str]:
    return _predict(ctx, "/proc/blood-automl-predictions.csv", "--overwrite")


def predict_out_is_its_input(ctx: Ctx) -> list[str]:
    return ["predict", ctx.export("good"), ctx.good_npz(), "--out", "data.npz", "--overwrite"]


def predict_out_study_store_overwrite(ctx: Ctx) -> list[str]:
    ctx.store("kept")
    return _predict(ctx, "store/studies.db", "--overwrite")


def sheet_over_thesis_overwrite(ctx: Ctx) -> list[str]:
    _thesis(ctx)
    return _sheet(ctx, "mydocs/thesis.tex", "--overwrite")


def sheet_into_folder(ctx: Ctx) -> list[str]:
    ctx.text("sheets/old.png", "not a png\n")
    return _sheet(ctx, "sheets")


def sheet_under_proc(ctx: Ctx) -> list[str]:
    return _sheet(ctx, "/proc/self/removed.png")


def sheet_onto_fifo(ctx: Ctx) -> list[str]:
    return _sheet(ctx, _fifo(ctx))


def sheet_link_to_device(ctx: Ctx) -> list[str]:
    (ctx.tmp / "removed.png").symlink_to("/dev/null")
    return _sheet(ctx, "removed.png")


def sheet_existing_file(ctx: Ctx) -> list[str]:
    ctx.text("removed.png", "my own picture\n")
    return _sheet(ctx, "removed.png")


NOT_OURS = "blood-automl did not make it"
NOT_REGULAR = "not a regular file"
FILE_FIX = "give a file name such as"

CASES = [
    # folders: --overwrite replaces only a folder blood-automl made for the same output
    Case("refit-thesis-overwrite", refit_thesis_overwrite, NOT_OURS, "choose another --out"),
    Case(
        "report-thesis-overwrite",
        report_thesis_with_summary_overwrite,
        NOT_OURS,
        "remove mydocs yourself",
    ),
    Case("refit-over-report", refit_over_a_report, "holds a blood-automl report", "another --out"),
    Case("refit-out-dot", refit_out_dot, "is the working directory", "give a new folder name"),
    Case("refit-out-parent", refit_out_parent, "parent of the working directory", "new folder"),
    Case(
        "report-out-dot", report_out_dot_with_summary, "is the working directory", "new folder name"
    ),
    Case("refit-out-under-file", refit_out_under_a_file, "is not a folder", "choose another path"),
    Case("refit-out-study-data", refit_out_is_study_data, "belongs to the study", "outside it"),
    Case("report-out-in-study", report_out_in_study_folder, "belongs to the study", "outside it"),
    # files: only a regular file is ever replaced, and only with --overwrite
    Case(
        "predict-out-devnull",
        predict_out_devnull_overwrite,
        f"/dev/null is a device, {NOT_REGULAR}",
        FILE_FIX,
        check=_devnull_intact,
        root=True,
    ),
    Case(
        "predict-out-fifo-overwrite",
        predict_out_fifo_overwrite,
        f"is a FIFO (named pipe), {NOT_REGULAR}",
        FILE_FIX,
        check=_still_fifo,
        timeout=120,
    ),
    Case(
        "predict-out-fifo",
        predict_out_fifo,
        "is a FIFO",
        FILE_FIX,
        check=_still_fifo,
        timeout=120,
    ),
    Case(
        "predict-out-socket",
        predict_out_socket_overwrite,
        f"is a socket, {NOT_REGULAR}",
        FILE_FIX,
        check=_socket_intact,
    ),
    Case(
        "predict-out-link-to-device",
        predict_out_link_to_device,
        "is a symbolic link (to /dev/null)",
        FILE_FIX,
    ),
    Case("predict-out-under-proc", predict_out_under_proc, "lies under /proc", FILE_FIX),
    Case("predict-out-is-input", predict_out_is_its_input, "is the input", "choose another --out"),
    Case(
        "predict-out-store-overwrite",
        predict_out_study_store_overwrite,
        "store/studies.db exists and is not a .csv file",
        "choose another --out (e.g. predictions.csv)",
    ),
    Case(
        "sheet-over-thesis-overwrite",
        sheet_over_thesis_overwrite,
        "is not a .png file",
        "choose another --sheet (e.g. removed.png)",
    ),
    Case("sheet-into-folder", sheet_into_folder, "is a folder, not a file", "removed.png"),
    Case("sheet-under-proc", sheet_under_proc, "lies under /proc", "removed.png"),
    Case(
        "sheet-onto-fifo",
        sheet_onto_fifo,
        f"is a FIFO (named pipe), {NOT_REGULAR}",
        "removed.png",
        check=_still_fifo,
        timeout=120,
    ),
    Case("sheet-link-to-device", sheet_link_to_device, "symbolic link (to /dev/null)", "removed"),
    Case("sheet-exists", sheet_existing_file, "removed.png exists", "pass --overwrite"),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_output_target_is_refused_and_nothing_is_lost(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
