"""Hostile input to ``search``: options checked before anything is written, broken weights, data,
folders and disks that stop the search with one line (keeping what was trained)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hostile.harness import Case, Ctx, param, run_case, run_cli

pytestmark = pytest.mark.slow

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "search" / "fake_trainer"
SMOKE_FILE = "mobilenet_2_5_224_tf_no_top.h5"
"""The ImageNet weights file of the smoke space's one backbone (MobileNet-0.25)."""
QUICK = ["--preset", "smoke", "--no-clean", "--workers", "1", "--no-recipes"]
HAS_CHATTR = shutil.which("chattr") is not None


def _fake_trainer(ctx: Ctx, **env: str) -> None:
    """Train with the test stand-in (no TensorFlow, a trial in a second), as the scale tests do."""
    path = os.pathsep.join(p for p in (str(FAKE_TRAINER), os.environ.get("PYTHONPATH")) if p)
    ctx.env.update(PYTHONPATH=path, BLOOD_AUTOML_FAKE_TRAINER="1", **env)


def _search(ctx: Ctx, *extra: str, weights: str = "none") -> list[str]:
    """A quick real ``search`` on valid little data in the case's folder."""
    return ["search", "--data", ctx.good_npz(), *QUICK, "--weights", weights, *extra]


def _study(ctx: Ctx, study: str = "st") -> optuna.Study:
    url = f"sqlite:///{ctx.tmp / 'store' / 's.db'}"
    return optuna.load_study(study_name=study, storage=url)


def _stored(ctx: Ctx, *extra: str) -> list[str]:
    """``search`` on the study ``st`` in ``store/s.db`` (the study folder is ``store/st``)."""
    url = f"sqlite:///{ctx.tmp / 'store' / 's.db'}"
    return _search(ctx, "--storage", url, "--study", "st", *extra)


# -- options: refused before TensorFlow is imported and before anything is written ----------


def seed_too_big(ctx: Ctx) -> list[str]:
    _fake_trainer(ctx)
    return _search(ctx, "--seed", str(2**32), "--trials", "1")


def corrected_seed_reruns(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["data.npz"], "the refused run wrote"
    again = run_cli(_search(ctx, "--seed", str(2**32 - 1), "--trials", "1"), ctx.tmp, env=ctx.env)
    assert again.returncode == 0, again.stderr[-2000:]


def seed_negative(ctx: Ctx) -> list[str]:
    return _search(ctx, "--seed", "-1")


def image_size_below_backbone(ctx: Ctx) -> list[str]:
    return _search(ctx, "--image-size", "16")


def image_size_huge(ctx: Ctx) -> list[str]:
    return _search(ctx, "--image-size", "100000")


def workers_beyond_machine(ctx: Ctx) -> list[str]:
    return ["search", "--data", ctx.good_npz(), "--preset", "smoke", "--workers", "1000"]


def timeout_nan(ctx: Ctx) -> list[str]:
    _fake_trainer(ctx)
    return _search(ctx, "--timeout", "nan", "--trials", "1")


def timeout_inf(ctx: Ctx) -> list[str]:
    _fake_trainer(ctx)
    return _search(ctx, "--timeout", "inf", "--trials", "1")


def trials_huge(ctx: Ctx) -> list[str]:
    return _search(ctx, "--trials", "1000000000", "--timeout", "60")


# -- weights and data: checked before trial 0, data first ----------------------------------


def weights_file_corrupt(ctx: Ctx) -> list[str]:
    ctx.text(f"weights/{SMOKE_FILE}", "not an HDF5 file at all\n")
    return _search(ctx, "--trials", "1", weights="weights")


def weights_file_not_keras(ctx: Ctx) -> list[str]:
    (ctx.tmp / "weights").mkdir()
    with h5py.File(ctx.tmp / "weights" / SMOKE_FILE, "w") as f:
        f["numbers"] = np.arange(10)
    return _search(ctx, "--trials", "1", weights="weights")


def weights_file_missing(ctx: Ctx) -> list[str]:
    (ctx.tmp / "weights").mkdir()
    ctx.text("weights/README.txt", "the weights go here\n")
    return _search(ctx, "--trials", "1", weights="weights")


def data_missing_before_weights(ctx: Ctx) -> list[str]:
    (ctx.tmp / "weights").mkdir()
    argv = ["search", "--data", "no_such_data.npz", *QUICK, "--weights", "weights"]
    return [*argv, "--trials", "1"]


# -- folders and disks ---------------------------------------------------------------------


def study_folder_is_a_file(ctx: Ctx) -> list[str]:
    # As root a chmod'ed folder would not stop writes; a file where the study's folder must
    # be made stands in for an unwritable study folder.
    ctx.text("store/st", "a regular file where the study's folder goes\n")
    return _stored(ctx, "--trials", "1")


def figures_folder_immutable(ctx: Ctx) -> list[str]:
    if not HAS_CHATTR:
        pytest.skip("chattr is not installed")
    _fake_trainer(ctx)
    folder = ctx.tmp / "store" / "st" / "artifacts"
    folder.mkdir(parents=True)
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    ctx.request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))
    return _stored(ctx, "--trials", "2")


def trained_trial_kept(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    (trial,) = _study(ctx).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value is not None, trial
    assert "figures not written" in trial.user_attrs["warnings"][0]
    assert "trial 0 is complete and kept" in result.stderr


def disk_full_in_training(ctx: Ctx) -> list[str]:
    _fake_trainer(ctx, BLOOD_AUTOML_FAKE_RAISE="OSError:28")
    return _stored(ctx, "--trials", "2")


def trial_not_counted(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    (trial,) = _study(ctx).get_trials()
    assert "interrupted" in trial.user_attrs, trial.user_attrs  # not counted towards --trials
    assert "0 of 2 trials are finished" in result.stderr


def store_only_in_memory(ctx: Ctx) -> list[str]:
    _fake_trainer(ctx)
    return _search(ctx, "--storage", "sqlite:///:memory:", "--trials", "1")


def nothing_counted_in_memory(ctx: Ctx, result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr


CASES = [
    Case(
        "seed-2-to-the-32",
        seed_too_big,
        "--seed must be at least 0 and at most 4294967295",
        "give --seed in that range",
        writes=True,  # nothing is written; the check then runs the corrected command
        check=corrected_seed_reruns,
    ),
    Case("seed-negative", seed_negative, "--seed must be at least 0", "give --seed"),
    Case(
        "image-size-below-backbone-minimum",
        image_size_below_backbone,
        "too small for MobileNet-0.25",
        "--image-size 32 or more",
    ),
    Case("image-size-huge", image_size_huge, "image size must be in", "--image-size 96"),
    Case(
        "workers-beyond-the-machine",
        workers_beyond_machine,
        "--workers 1000 is more than this machine can run",
        "or fewer",
    ),
    Case("timeout-nan", timeout_nan, "--timeout must be a positive number", "--timeout 3600"),
    Case("timeout-inf", timeout_inf, "but got inf", "leave it out"),
    Case(
        "trials-huge",
        trials_huge,
        "--trials must be at least 1 and at most 100000",
        "give --trials",
    ),
    Case(
        "weights-dir-corrupt-file",
        weights_file_corrupt,
        f"{SMOKE_FILE} cannot be loaded",
        "--weights none",
    ),
    Case(
        "weights-dir-hdf5-not-keras",
        weights_file_not_keras,
        "not Keras weights",
        "--weights none",
    ),
    Case("weights-dir-missing-file", weights_file_missing, f"{SMOKE_FILE} is not in", "--space"),
    Case(
        "data-missing-reported-before-weights",
        data_missing_before_weights,
        "no_such_data.npz: no such file",
        "give an .npz file",
    ),
    Case(
        "study-folder-is-a-file",
        study_folder_is_a_file,
        "is a file, not a folder",
        "move that file away",
    ),
    Case(
        "figures-folder-unwritable-trial-kept",
        figures_folder_immutable,
        "its figures could not be written",
        "resume with: blood-automl search --study st",
        writes=True,
        check=trained_trial_kept,
        root=True,  # chattr +i: root's writes fail there too
    ),
    Case(
        "disk-full-while-training-not-counted",
        disk_full_in_training,
        "No space left on device",
        "resume with: blood-automl search --study st",
        writes=True,
        check=trial_not_counted,
    ),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_search_input_gives_one_error_line(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
