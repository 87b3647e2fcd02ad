"""The command line: every command's help has an example; inspect-data prints tables or JSON;
a DataError reaches the user as one ``error:`` line and exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer.main
from PIL import Image

from blood_automl.cli import app, main
from conftest import make_images


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _commands() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_inspect_data_is_a_command() -> None:
    assert "inspect-data" in _commands()


@pytest.mark.parametrize(
    "argv", [[], *[[c] for c in _commands()]], ids=lambda a: " ".join(a) or "root"
)
def test_every_help_has_an_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert any(line.strip().startswith("Example:") for line in out.splitlines()), out


def _npz(tmp_path: Path) -> Path:
    images, labels = make_images(120, size=24)
    x = np.concatenate([images, images[:3]])
    y = np.concatenate([labels, labels[:3]])
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    return tmp_path / "d.npz"


def test_inspect_data_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "sheet.png"
    assert (
        _run(
            [
                "inspect-data",
                str(_npz(tmp_path)),
                "--image-size",
                "24",
                "--json",
                "--sheet",
                str(sheet),
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    for key in (
        "n_input",
        "n_kept",
        "class_names",
        "class_counts_before",
        "class_counts_after",
        "removed",
        "split",
    ):
        assert key in info
    assert info["n_input"] == 123 and info["n_kept"] == 120
    assert info["removed"] == [
        {
            "reason": "exact duplicate of an earlier image with the same label",
            "count": 3,
            "indices": [120, 121, 122],
            "kind": "duplicate",
        }
    ]
    with Image.open(sheet) as im:
        assert im.format == "PNG"


def test_inspect_data_tables_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["inspect-data", str(_npz(tmp_path)), "--image-size", "32", "--no-clean"]) == 0
    out = capsys.readouterr().out
    assert "Images per class" in out and "neutrophil" in out and "cleaning off" in out
    assert "resized 123 images from 24x24 to 32x32" in out


def test_inspect_data_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = make_images(40, size=16)
    np.savez(tmp_path / "g.npz", images=images[..., 0], labels=labels)
    assert _run(["inspect-data", str(tmp_path / "g.npz"), "--image-size", "16"]) == 1
    assert "--convert" in capsys.readouterr().err
    assert (
        _run(["inspect-data", str(tmp_path / "g.npz"), "--image-size", "16", "--convert", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n_input"] == 40


def test_data_error_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = make_images(40, size=16)
    labels[17] = 9
    np.savez(tmp_path / "bad.npz", images=images, labels=labels)
    assert _run(["inspect-data", str(tmp_path / "bad.npz"), "--image-size", "16"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (
        f"error: {tmp_path / 'bad.npz'}: labels must be integers in [0, 8), but got 9 at index 17; "
        "add a 'class_names' array naming every class, or fix the labels"
    )


def test_real_command_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "blood_automl", "inspect-data", str(tmp_path / "missing.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.npz'}: no such file or folder; give an .npz file, a folder of "
        "class folders, or bloodmnist[:64|128|224]"
    ]


def test_config_error_is_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["inspect-data", str(_npz(tmp_path)), "--image-size", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: image size must be in [8, 1024]")
