"""Report tests on real SQLite studies: files, valid PNGs, table rows, counts, refusals."""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import re
import sys
from pathlib import Path

import optuna
import pytest
from PIL import Image

from blood_automl.analysis.report import write_report
from blood_automl.errors import ConfigError, StorageError
from blood_automl.studies import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)

PRUNED = (2, 5)
FAILED = 6
N_TRIALS = 8


def _objective(trial: optuna.Trial) -> float:
    backbone = trial.suggest_categorical("backbone", ["MobileNetV3Small", "EfficientNetB0"])
    width = trial.suggest_int("dense_width", 16, 256, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    trial.set_user_attr("backbone", backbone)
    value = 0.5 + 0.3 * (backbone == "EfficientNetB0") + 0.1 * dropout + width / 10_000
    for step in range(4):
        trial.report(value * (step + 1) / 4, step)
    if trial.number in PRUNED:
        raise optuna.TrialPruned()
    if trial.number == FAILED:
        raise RuntimeError("out of memory")
    return value


def _study(tmp_path: Path, name: str = "rep", n_trials: int = N_TRIALS) -> str:
    url = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.set_user_attr("objective", "accuracy")
    study.optimize(_objective, n_trials=n_trials, catch=(RuntimeError,))
    return url


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    url = _study(tmp)
    return url, tmp


def test_report_writes_every_file_with_valid_images_and_counts(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = made
    out = tmp_path / "r"
    result = write_report(url, "rep", out, top=3)
    assert result.folder == out
    names = {p.name for p in result.files}
    for required in (
        "top_trials.csv",
        "top_trials.md",
        "param_importances.png",
        "optimization_history.png",
        "intermediate_values.png",
        "summary.json",
    ):
        assert required in names
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG"
        with Image.open(png) as im:
            assert im.size[0] > 200 and im.size[1] > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over

    study = optuna.load_study(study_name="rep", storage=url)
    complete = sorted(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: -float(t.value or 0),
    )
    with open(out / "top_trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert [int(r["number"]) for r in rows] == [t.number for t in complete[:3]]
    assert float(rows[0]["value"]) == pytest.approx(complete[0].value)
    assert rows[0]["backbone"] == complete[0].params["backbone"]
    assert rows[0]["param_dropout"] == repr(complete[0].params["dropout"])
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert float(rows[0]["duration_s"]) >= 0
    md = (out / "top_trials.md").read_text()
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 3
    assert f"dense_width={complete[0].params['dense_width']}" in md

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary
    assert summary["study"] == "rep"
    assert summary["counts"]["complete"] == N_TRIALS - len(PRUNED) - 1
    assert summary["counts"]["pruned"] == len(PRUNED)
    assert summary["counts"]["fail"] == 1
    assert summary["counts"]["finished"] == N_TRIALS
    assert summary["best"]["number"] == complete[0].number
    assert summary["best"]["value"] == pytest.approx(complete[0].value)
    assert summary["best"]["params"] == complete[0].params
    assert set(summary["param_importances"]) == {"backbone", "dense_width", "dropout"}
    assert sum(summary["param_importances"].values()) == pytest.approx(1.0)


@pytest.mark.skipif(importlib.util.find_spec("plotly") is not None, reason="plotly is installed")
def test_without_plotly_html_is_skipped_with_a_note(made: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = made
    result = write_report(url, "rep", tmp_path / "r")
    assert [p.name for p in (tmp_path / "r").glob("*.html")] == ["index.html"]
    assert any("plotly is not installed" in n for n in result.notes)
    assert "matplotlib" in sys.modules  # TensorFlow-free: see tests/test_imports.py


def test_with_plotly_html_pages_are_written(made: tuple[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    url, _ = made
    write_report(url, "rep", tmp_path / "r")
    for name in ("optimization_history", "intermediate_values", "param_importances"):
        assert (tmp_path / "r" / f"{name}.html").stat().st_size > 1000
    assert (tmp_path / "r" / "plotly.min.js").is_file()


def test_existing_folder_is_refused_unless_overwrite(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = made
    out = tmp_path / "r"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"blood-automl did not make it .*choose another --out"):
        write_report(url, "rep", out)  # --overwrite would not help: not suggested
    with pytest.raises(ConfigError, match=r"did not make it .*never replaced.*--out") as e:
        write_report(url, "rep", out, overwrite=True)  # never deletes a folder of other files
    assert "\n" not in str(e.value)
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    first = write_report(url, "rep", out, top=1)
    (out / "extra.txt").write_text("left in a report folder")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        write_report(url, "rep", out)
    result = write_report(url, "rep", out, overwrite=True, top=2)
    assert not (out / "extra.txt").exists()
    assert (out / "summary.json") in result.files
    assert len(result.summary["top_trials"]) == 2 and len(first.summary["top_trials"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_default_folder_is_reports_study(
    made: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = made
    monkeypatch.chdir(tmp_path)
    result = write_report(url, "rep", top=2)
    assert result.folder == Path("reports") / "rep"
    assert (tmp_path / "reports" / "rep" / "top_trials.csv").is_file()


def test_missing_study_and_missing_storage_are_storage_errors(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = made
    with pytest.raises(StorageError, match=r"study 'nope' not found .*existing studies: rep"):
        write_report(url, "nope", tmp_path / "r")
    missing = tmp_path / "none.db"
    with pytest.raises(StorageError, match=r"no study storage at .*run blood-automl search"):
        write_report(f"sqlite:///{missing}", "rep", tmp_path / "r")
    assert not missing.exists()  # a report never creates a storage
    assert not (tmp_path / "r").exists()


def test_study_without_completed_trial_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=open_storage(url), study_name="bad", direction="maximize")

    def always_pruned(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        trial.report(0.1, 0)
        raise optuna.TrialPruned()

    study.optimize(always_pruned, n_trials=2)
    with pytest.raises(StorageError, match=r"no completed trial yet \(2 pruned\)") as e:
        write_report(url, "bad", tmp_path / "r")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith("s.db")]


def test_one_completed_trial_skips_importances_with_a_note(tmp_path: Path) -> None:
    url = _study(tmp_path, "one", n_trials=1)
    result = write_report(url, "one", tmp_path / "r")
    names = {p.name for p in result.files}
    assert "param_importances.png" not in names
    assert "optimization_history.png" in names
    assert any("at least 2 completed trials" in n for n in result.notes)
    assert result.summary["param_importances"] is None


def test_bad_top_and_bad_name_are_config_errors(made: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = made
    with pytest.raises(ConfigError, match="--top"):
        write_report(url, "rep", tmp_path / "r", top=0)
    with pytest.raises(ConfigError, match="study name"):
        write_report(url, "../etc", tmp_path / "r")


def test_index_html_holds_every_figure_and_table_and_refers_to_nothing(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = made
    out = tmp_path / "r"
    result = write_report(url, "rep", out, top=3)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert out / "index.html" in result.files
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{data}"' in page
    sources = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.IGNORECASE)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|url\(|<link|<script|@import", page, flags=re.IGNORECASE)
    summary = result.summary
    assert f"<code>{summary['study']}</code>" in page
    for row in summary["top_trials"]:
        assert f'<td class="num">{row["number"]}</td>' in page
    for name in summary["param_importances"]:
        assert f"<td>{name}</td>" in page
    assert summary["storage"] in page  # masked like summary.json


def test_report_folder_is_marked_readable_and_a_foreign_marker_is_refused(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = made
    out = tmp_path / "r"
    write_report(url, "rep", out, top=1)
    marker = json.loads((out / ".blood-automl-report").read_text())
    assert marker["kind"] == "report" and marker["version"]
    assert out.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o644}
    export = tmp_path / "e"
    export.mkdir()
    (export / ".blood-automl-export").write_text('{"kind": "export"}')
    (export / "model.keras").write_text("a model")
    with pytest.raises(ConfigError, match=r"holds a blood-automl export, not a report"):
        write_report(url, "rep", export, overwrite=True)
    assert (export / "model.keras").read_text() == "a model"


def test_storage_password_is_masked_in_summary_and_page(
    made: tuple[str, Path], tmp_path: Path
) -> None:
    from blood_automl.analysis.report import _summary
    from blood_automl.analysis.report_html import render_index
    from blood_automl.studies import study_counts, summarize

    url, _ = made
    study = optuna.load_study(study_name="rep", storage=url)
    rows = summarize(study, 2)
    server = "postgresql://alice:s3cr3t-pw@db.example/studies"
    summary = _summary(study, server, study_counts(study), rows, None, [])
    page = render_index(tmp_path, summary, rows)
    assert "alice" in summary["storage"] and "db.example" in summary["storage"]
    assert "s3cr3t-pw" not in json.dumps(summary) and "s3cr3t-pw" not in page
