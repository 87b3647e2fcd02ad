"""Pixels kept honest (16-bit, float scales, sizes), prepared data verified cheaply, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blood_automl.data import inspect_data, load_dataset, load_prepared, prepare_data
from blood_automl.data.prepare import MANIFEST, PreparationStopped
from blood_automl.data.split import split_indices
from blood_automl.data.validate import geometry_problem, name_key
from blood_automl.errors import ConfigError, DataError
from blood_automl.outputs import HOST_TAG, TEMP_PREFIX
from conftest import make_images

from .conftest import small_npz

# --- 16-bit and float pixels ------------------------------------------------------------------


def _grey_folder(root: Path, greys: np.ndarray, scale: int) -> Path:
    """Two class folders of 16-bit greyscale PNGs holding ``greys * scale``."""
    for i, grey in enumerate(greys):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey.astype(np.uint16) * scale).save(folder / f"{i:03d}.png")
    assert Image.open(next((root / "a").iterdir())).mode.startswith("I")
    return root


def test_16bit_png_with_convert_keeps_the_picture(
    tmp_path: Path, pbc_small: dict[str, np.ndarray]
) -> None:
    greys = pbc_small["images"][:12].mean(axis=3).round().astype(np.uint8)
    ds = load_dataset(_grey_folder(tmp_path / "d", greys, 257), image_size=96, convert=True)
    order = [int(i) for i in np.concatenate([np.arange(1, 12, 2), np.arange(0, 12, 2)])]
    got = ds.images[:, :, :, 0].astype(np.float64)
    want = greys[order].astype(np.float64)
    assert np.array_equal(got, want)  # v * 257 over the full 16-bit range is v again
    assert (ds.images[..., 0] == ds.images[..., 2]).all()
    assert any("16-bit" in n and "full 16-bit range" in n for n in ds.notes)


def test_12bit_data_in_16bit_png_is_scaled_with_a_warning_note(tmp_path: Path) -> None:
    images, _ = make_images(12, size=32)
    greys = images[..., 0]
    ds = load_dataset(_grey_folder(tmp_path / "d", greys, 16), image_size=32, convert=True)
    got = ds.images[..., 0].astype(np.float64).ravel()
    order = [int(i) for i in np.concatenate([np.arange(1, 12, 2), np.arange(0, 12, 2)])]
    want = greys[order].astype(np.float64).ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.99  # the picture is kept, only darker
    assert got.max() <= 16
    assert any("12-bit" in n for n in ds.notes)


def test_uint16_array_with_convert_scales_the_full_range(tmp_path: Path) -> None:
    images, labels = make_images(24, size=16)
    path = tmp_path / "d.npz"
    np.savez(path, images=images.astype(np.uint16) * 257, labels=labels)
    ds = load_dataset(path, image_size=16, convert=True)
    assert np.array_equal(ds.images, images)
    with pytest.raises(DataError, match=r"16-bit pixel values.*pass --convert"):
        load_dataset(path, image_size=16)


def test_real_images_as_floats_in_either_scale_are_read_exactly(
    tmp_path: Path, pbc_small: dict[str, np.ndarray]
) -> None:
    images = pbc_small["images"][:200]
    labels = pbc_small["labels"][:200]
    for k, floats in enumerate([images / np.float32(255), images.astype(np.float32)]):
        path = tmp_path / f"f{k}.npz"
        np.savez(path, images=floats, labels=labels)
        assert np.array_equal(load_dataset(path).images, images)


def test_float_rule_refuses_what_is_ambiguous(tmp_path: Path) -> None:
    images, labels = make_images(24, size=16)
    unit = images / np.float32(255)
    path = tmp_path / "d.npz"
    stray = unit.copy()
    stray[3, 0, 0, 1] = 1.01
    np.savez(path, images=stray, labels=labels)
    with pytest.raises(DataError, match=r"1 image\(s\) are neither.*image 3"):
        load_dataset(path, image_size=16)
    black = unit * 255
    black[5] = 0  # an all-black image is the same in either scale
    np.savez(path, images=black, labels=labels)
    assert load_dataset(path, image_size=16).images[5].max() == 0


# --- sizes and names --------------------------------------------------------------------------


def test_geometry_thresholds_pass_real_data_and_refuse_degenerate_images(
    pbc_small: dict[str, np.ndarray],
) -> None:
    h, w = pbc_small["images"].shape[1:3]
    assert geometry_problem(w, h, 96) is None
    assert geometry_problem(360, 363, 96) is None  # the full-size PBC images
    assert geometry_problem(28, 28, 96) is None  # BloodMNIST at 28x28
    assert geometry_problem(192, 96, 96) is None
    assert "aspect ratio" in str(geometry_problem(200, 96, 96))
    assert "quarter" in str(geometry_problem(23, 23, 96))
    assert "aspect ratio" in str(geometry_problem(4000, 1, 96))


def test_class_names_are_compared_without_case_spaces_or_underscores() -> None:
    assert name_key(" Immature_Granulocytes ") == name_key("immature  granulocytes")
    assert name_key("basophil") != name_key("eosinophil")


# --- the quick verification of prepared data -------------------------------------------------


def test_quick_verification_catches_one_changed_byte(tmp_path: Path) -> None:
    out = tmp_path / "p"
    prepare_data(small_npz(tmp_path / "d.npz"), out, image_size=16)
    load_prepared(out, verify="quick")
    path = out / "x_train.npy"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    load_prepared(out, verify=False)  # shapes and dtypes alone do not see it
    with pytest.raises(DataError, match=r"x_train\.npy: its bytes changed.*remove the folder"):
        load_prepared(out, verify="quick")
    path.write_bytes(bytes(raw[:-10]))
    with pytest.raises(DataError, match="truncated"):
        load_prepared(out, verify="quick")


# --- seeds ------------------------------------------------------------------------------------


def test_seed_out_of_range_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = small_npz(tmp_path / "d.npz")
    for seed in (2**32, -1):
        with pytest.raises(ConfigError, match=r"seed must be in \[0, 4294967295\]"):
            prepare_data(data, tmp_path / "p", image_size=16, seed=seed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    labels = np.arange(40) % 4
    assert split_indices(labels, seed=2**32 - 1).sizes()["test"] == 8


# --- stopping and leftovers -------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def test_sigterm_while_writing_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = small_npz(tmp_path / "d.npz")
    saved: list[str] = []
    real_save = np.save

    def save_then_signal(path: Path, array: np.ndarray, **kw: bool) -> None:
        real_save(path, array, **kw)
        saved.append(Path(path).name)
        if len(saved) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(np, "save", save_then_signal)
    with pytest.raises(PreparationStopped, match=r"stopped by SIGTERM.*run the command again"):
        prepare_data(data, tmp_path / "study" / "data", image_size=16)
    assert len(saved) == 3
    assert os.listdir(tmp_path / "study") == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


_PREPARE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from blood_automl.data import prepare_data
    from blood_automl.errors import BloodAutoMLError
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6000, 96, 96, 3), dtype=np.uint8)
    np.savez("big.npz", images=images, labels=np.arange(6000) % 8)
    print("ready", flush=True)
    try:
        prepare_data("big.npz", "studies/s/data")
    except BloodAutoMLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_prepare_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PREPARE],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # reading, hashing and cleaning 6,000 images take several seconds
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: stopped by {sig.name}"), err
    studies = tmp_path / "studies"
    assert not studies.exists() or _leftovers(studies / "s") == []
    assert not (studies / "s" / "data").exists()


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "study" / "data"
    out.parent.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    names = {
        "dead": f"{TEMP_PREFIX}data.{HOST_TAG}-{dead_pid}.0123abcd",
        "alive": f"{TEMP_PREFIX}data.{HOST_TAG}-{os.getppid()}.deadbeef",
        "other-host": f"{TEMP_PREFIX}data.0a1b2c-{dead_pid}.00112233",
    }
    an_hour_ago = time.time() - 3600  # older than this process: it could be stale
    for name in names.values():
        (out.parent / name).mkdir()
        (out.parent / name / "x_train.npy").write_bytes(b"half")
        os.utime(out.parent / name, (an_hour_ago, an_hour_ago))
    prepare_data(small_npz(tmp_path / "d.npz"), out, image_size=16)
    assert _leftovers(out.parent) == sorted([names["alive"], names["other-host"]])
    assert (out / MANIFEST).is_file()


# --- inspect-data when the data cannot be split -----------------------------------------------


def test_inspect_data_reports_data_that_cannot_be_split(tmp_path: Path) -> None:
    images, labels = make_images(42, size=16, n_classes=3)
    labels[np.flatnonzero(labels == 2)[2:]] = 0  # class 2 keeps 2 images
    path = tmp_path / "few.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    info = inspect_data(path, image_size=16, clean=False).to_json()
    assert info["class_counts_after"]["c"] == 2
    assert "class 'c' has 2 image(s), too few" in info["split_error"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "blood_automl",
            "inspect-data",
            str(path),
            "--image-size",
            "16",
            "--no-clean",
            "--sheet",
            str(tmp_path / "sheet.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Images per class" in result.stdout
    warning = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "class 'c' has 2 image(s)" in warning[0]
    assert (tmp_path / "sheet.png").is_file()
    json_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "blood_automl",
            "inspect-data",
            str(path),
            "--image-size",
            "16",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "too few" in json.loads(json_run.stdout)["split_error"]
