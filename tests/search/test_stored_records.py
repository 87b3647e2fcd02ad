"""A store written by blood-automl 0.1 (``data/store_0_1.db``) is searched, resumed, refitted and reported.

The file was made by ``data/make_store.py`` with that version's code (commit in
``data/store_0_1.json``): two smoke trials on synthetic images, which the same script makes
again here, byte for byte, so the study's data fingerprint still matches.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import optuna
import pytest

from blood_automl.studies.records import SPACE_ATTR

from .conftest import run_cli

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
KEPT = json.loads((DATA / "store_0_1.json").read_text(encoding="utf-8"))


def _maker() -> object:
    spec = importlib.util.spec_from_file_location("make_store", DATA / "make_store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_store_of_the_previous_version_is_searched_refitted_and_reported(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    shutil.copyfile(DATA / "store_0_1.db", tmp_path / "studies" / "store.db")
    url = f"sqlite:///{tmp_path / 'studies' / 'store.db'}"
    study_name = KEPT["study"]
    before = optuna.load_study(study_name=study_name, storage=url)
    old_trials, old_attrs = before.trials, before.user_attrs  # read now: a Study reads live
    assert len(old_trials) == 2 and SPACE_ATTR in old_attrs
    data = _maker().synthetic_npz(tmp_path / "synthetic.npz")  # type: ignore[attr-defined]
    common = ("--study", study_name, "--storage", url)

    resumed = run_cli("search", "--trials", "3", "--data", str(data), *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name=study_name, storage=url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3
    assert study.user_attrs[SPACE_ATTR] == old_attrs[SPACE_ATTR]
    # what the old trials stored is read as it was written
    for old, now in zip(old_trials, study.trials[:2], strict=True):
        assert now.user_attrs == old.user_attrs and now.params == old.params

    refit = run_cli(
        "refit-best", *common, "--out", str(tmp_path / "export"), "--no-portable", cwd=tmp_path
    )
    assert refit.returncode == 0, refit.stderr[-3000:]
    exported = json.loads((tmp_path / "export" / "config.json").read_text(encoding="utf-8"))
    assert exported["space_version"] == old_attrs[SPACE_ATTR]["version"]

    report = run_cli("report", *common, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "index.html").is_file()
