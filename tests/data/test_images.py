"""The one image-file decoder that data loading and prediction share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl.data.images import ImageTally, read_image_file
from blood_automl.errors import DataError


def test_a_fifo_named_like_an_image_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block for ever
    with pytest.raises(DataError, match=r"^pipe\.png: is a FIFO \(named pipe\), not an image file"):
        read_image_file(tmp_path / "pipe.png", "pipe.png", convert=False, tally=ImageTally())


def test_modes_that_need_converting_are_noted_or_converted(tmp_path: Path) -> None:
    grey = np.arange(32 * 48, dtype=np.uint8).reshape(32, 48)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    tally = ImageTally()
    assert read_image_file(tmp_path / "grey.png", "grey.png", convert=False, tally=tally) is None
    assert tally.needs_convert == [("grey.png", "L")]
    tally = ImageTally()
    rgb = read_image_file(tmp_path / "grey.png", "grey.png", convert=True, tally=tally)
    assert rgb is not None and rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 1], grey) and tally.converted == 1


def test_an_unreadable_file_is_tallied_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    tally = ImageTally()
    assert (
        read_image_file(tmp_path / "broken.png", "a/broken.png", convert=True, tally=tally) is None
    )
    assert len(tally.bad) == 1 and tally.bad[0].startswith("a/broken.png (")
