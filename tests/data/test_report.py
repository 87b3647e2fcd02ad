"""The inspect-data report: JSON contents, rich tables and the contact sheet of removed images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from blood_automl.data import PBC_CLASS_NAMES, inspect_data, print_report, write_contact_sheet
from conftest import make_images

from .conftest import cartoon


def _messy(tmp_path: Path) -> Path:
    images, labels = make_images(200, size=24)
    art = np.repeat(cartoon(1, 24)[None], 6, 0)
    x = np.concatenate([images, art, images[[5, 6]], images[[7]]])
    y = np.concatenate([labels, np.arange(6) % 8, labels[[5, 6]], [(labels[7] + 1) % 8]])
    np.savez(tmp_path / "messy.npz", images=x, labels=y)
    return tmp_path / "messy.npz"


def test_report_json(tmp_path: Path) -> None:
    report = inspect_data(_messy(tmp_path), image_size=24)
    info = report.to_json()
    json.dumps(info)  # JSON-able
    assert info["n_input"] == 209
    assert info["class_names"] == list(PBC_CLASS_NAMES)
    assert sum(info["class_counts_before"].values()) == 209
    removed = {g["kind"]: g for g in info["removed"]}
    assert removed["repeated"]["indices"] == list(range(200, 206))
    assert removed["duplicate"]["indices"] == [206, 207]
    assert removed["conflict"]["indices"] == [7, 208]
    assert all(g["count"] == len(g["indices"]) and g["reason"] for g in info["removed"])
    assert info["n_kept"] == 209 - 6 - 2 - 2 == sum(info["class_counts_after"].values())
    assert set(info["split"]) == {"train", "val", "test"}
    assert sum(sum(c.values()) for c in info["split"].values()) == info["n_kept"]
    assert info["split_sizes"]["test"] == sum(info["split"]["test"].values())
    assert not list(tmp_path.glob("**/*.npy"))  # inspecting writes nothing


def test_no_clean_report(tmp_path: Path) -> None:
    info = inspect_data(_messy(tmp_path), image_size=24, clean=False).to_json()
    assert info["n_kept"] == 209 and info["removed"] == [] and info["cleaning"] is False


def test_tables_name_every_class_and_removal(tmp_path: Path) -> None:
    out = io.StringIO()
    print_report(inspect_data(_messy(tmp_path), image_size=24), Console(file=out, width=200))
    text = out.getvalue()
    for name in PBC_CLASS_NAMES:
        assert name in text
    assert "Removed by cleaning" in text and "repeated image: 6 identical copies" in text
    assert "conflicting labels" in text and "Split (stratified, seeded)" in text


def test_contact_sheet(tmp_path: Path) -> None:
    report = inspect_data(_messy(tmp_path), image_size=24)
    path = write_contact_sheet(report, tmp_path / "sheets" / "removed.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 480 and im.height > 3 * 80
    clean = inspect_data(_messy(tmp_path), image_size=24, clean=False)
    with Image.open(write_contact_sheet(clean, tmp_path / "none.png")) as im:
        assert im.height < 80
