"""A study stored by the previous space schema (1) is resumed, refitted and reported as it was made.

The study is made by today's search and then given exactly the records the previous
version wrote: its stored space (``data/space_schema1_smoke.json``, the smoke preset as
that version stored it), that space's version and Hyperband budget, and trial
configurations without the fields added since.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest

from blood_automl.spaces import Space, TrialConfig, suggest
from blood_automl.spaces.config import LEGACY_FIELDS

from .conftest import run_cli

pytestmark = pytest.mark.slow

STUDY = "old"
OLD_SPACE = json.loads((Path(__file__).parent / "data" / "space_schema1_smoke.json").read_text())


def _storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'studies' / 'old.db'}"


def test_a_schema_1_space_keeps_its_version_and_rebuilds_its_trials() -> None:
    space = Space.from_dict(OLD_SPACE)
    assert space.schema == 1 and space.version == OLD_SPACE["version"]
    assert space.to_dict() == OLD_SPACE
    assert space.fixed().items() >= LEGACY_FIELDS.items()
    params = {
        "dense_width": 64, "activation": "relu", "dropout": 0.2, "randaugment_ops": 1,
        "randaugment_magnitude": 0.4, "head_lr": 1e-3, "unfreeze_fraction": 0.2, "finetune_lr": 1e-4,
    }  # fmt: skip
    config = suggest(optuna.trial.FixedTrial(params), space)
    assert (config.schedule, config.batch_norm, config.warmup_epochs) == ("two_phase", "frozen", 0)
    assert (config.head_epochs, config.finetune_epochs) == (1, 1)
    # A configuration recorded then, without the new fields, reads back as the same one.
    recorded = {k: v for k, v in config.to_dict().items() if k not in LEGACY_FIELDS}
    assert TrialConfig.from_dict(recorded) == config


def _make_it_old(tmp: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=_storage(tmp))
    study.set_user_attr("space", OLD_SPACE)
    study.set_user_attr("space_version", OLD_SPACE["version"])
    study.set_user_attr("max_resource", 2)  # schema 1: head + fine-tune epochs
    with sqlite3.connect(tmp / "studies" / "old.db") as db:
        rows = db.execute(
            "SELECT trial_user_attribute_id, value_json FROM trial_user_attributes WHERE key = 'config'"
        ).fetchall()
        for row_id, value in rows:
            config = {k: v for k, v in json.loads(value).items() if k not in LEGACY_FIELDS}
            db.execute(
                "UPDATE trial_user_attributes SET value_json = ? WHERE trial_user_attribute_id = ?",
                (json.dumps(config), row_id),
            )


def test_an_old_study_is_resumed_refitted_and_reported(
    small_real_npz: Path, tmp_path: Path
) -> None:
    common = ("--study", STUDY, "--storage", _storage(tmp_path))
    # The old smoke preset's domains, so the first trial is one the old space could make.
    narrowed = tmp_path / "old_smoke.toml"
    narrowed.write_text(
        'base = "smoke"\nname = "smoke"\n[params.unfreeze_fraction]\nlow = 0.1\nhigh = 0.3\nstep = 0.1\n',
        encoding="utf-8",
    )
    first = run_cli(
        "search", "--trials", "1", "--space", str(narrowed), "--weights", "none",
        "--data", str(small_real_npz), *common, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    _make_it_old(tmp_path)

    # Resumed without --preset: the stored schema-1 space is searched, as it was.
    resumed = run_cli("search", "--trials", "2", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert OLD_SPACE["version"] in resumed.stdout
    study = optuna.load_study(study_name=STUDY, storage=_storage(tmp_path))
    assert study.user_attrs["space"] == OLD_SPACE
    new = study.trials[1]
    assert new.state == optuna.trial.TrialState.COMPLETE
    config = new.user_attrs["config"]
    assert {k: config[k] for k in LEGACY_FIELDS} == LEGACY_FIELDS
    # Pruned as schema 1 did: every epoch of both phases under one counter.
    phases = [row["phase"] for row in new.user_attrs["history"]]
    assert sorted(new.intermediate_values) == list(range(1, len(phases) + 1))

    # Today's smoke preset is another space: refused for the old study, naming the option.
    other = run_cli("search", "--trials", "3", "--preset", "smoke", *common, cwd=tmp_path)
    assert other.returncode == 1 and "--preset" in other.stderr
    assert len(optuna.load_study(study_name=STUDY, storage=_storage(tmp_path)).trials) == 2

    refit = run_cli(
        "refit-best", *common, "--out", str(tmp_path / "export"), "--no-portable", cwd=tmp_path
    )
    assert refit.returncode == 0, refit.stderr[-3000:]
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["space_version"] == OLD_SPACE["version"]
    written = {p.name for p in (tmp_path / "export").iterdir()}
    assert "model.keras" in written and not written & {"model.onnx", "model.tflite"}

    report = run_cli("report", *common, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report" / "index.html").is_file()
