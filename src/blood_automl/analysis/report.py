"""The report of a study: top trials, parameter importances, optimization history and curves."""

from __future__ import annotations

import csv
import datetime
import importlib.util
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from blood_automl import __version__
from blood_automl.analysis.report_html import write_index_html
from blood_automl.errors import ConfigError, StorageError
from blood_automl.outputs import check_output_dir, csv_cell, write_dir
from blood_automl.studies import (
    DEFAULT_STORAGE,
    artifact_dir,
    check_study_name,
    get_study,
    mask_url,
    open_existing_storage,
    study_counts,
    summarize,
)
from blood_automl.studies.records import (
    BACKBONE_ATTR,
    BEST_STEP_ATTR,
    EPOCHS_ATTR,
    OBJECTIVE_ATTR,
    SEED_ATTR,
    TRAIN_SECONDS_ATTR,
    VAL_METRICS_ATTR,
)
from blood_automl.studies.urls import is_sqlite, parse_url, sqlite_file

REPORT_KIND = "report"
DEFAULT_REPORTS = Path("reports")
"""Reports go to ``reports/<study>/`` under the working directory unless ``--out`` says otherwise."""

REPORTED_TRIAL_ATTRS = (
    BACKBONE_ATTR,
    VAL_METRICS_ATTR,
    EPOCHS_ATTR,
    BEST_STEP_ATTR,
    SEED_ATTR,
    TRAIN_SECONDS_ATTR,
)
"""The best trial's attributes the summary keeps (under the same names), when it has them."""

_STATE_COLOURS = {
    TrialState.COMPLETE: "tab:blue",
    TrialState.PRUNED: "tab:orange",
    TrialState.FAIL: "tab:red",
}


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote: the folder, its files (sorted), notes on what it skipped."""

    folder: Path
    files: tuple[Path, ...]
    notes: tuple[str, ...]
    summary: dict[str, Any]


def write_report(
    storage_url: str | None,
    study: str,
    out: Path | None = None,
    *,
    overwrite: bool = False,
    top: int = 10,
) -> ReportResult:
    """Write the report of ``study`` into ``out`` (default ``reports/<study>/``) and say what it holds.

    Files: ``top_trials.csv`` / ``.md`` (the ``top`` completed trials, best first),
    ``param_importances.png`` (needs 2 completed trials), ``optimization_history.png``,
    ``intermediate_values.png`` (one curve per trial), the same figures as HTML when plotly
    is installed, ``summary.json``, and ``index.html``: one self-contained page holding every
    figure (as data URIs) and table. Everything is written into a temporary folder that is
    renamed at the end (see :mod:`blood_automl.outputs`), so a failed report leaves nothing
    half-written.

    Raises :class:`ConfigError` for a bad ``top`` or an ``out`` that may not be written (a
    folder that is not an earlier report, or one without ``overwrite``; checked before the
    study is read), and :class:`StorageError` when the storage or study does not exist or
    the study has no completed trial.
    """
    check_study_name(study)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be a whole number >= 1, but got {top!r}")
    folder = Path(out) if out is not None else DEFAULT_REPORTS / study
    protected = study_paths(storage_url, study)
    check_output_dir(folder, REPORT_KIND, overwrite=overwrite, protected=protected)
    loaded = get_study(open_existing_storage(storage_url), study)
    trials = loaded.get_trials(deepcopy=False)
    counts = study_counts(loaded)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise StorageError(
            f"study '{study}' has no completed trial yet ({_count_text(counts)}), so there is "
            f"nothing to report; let blood-automl search finish at least one trial first"
        )

    notes: list[str] = []
    summary: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        rows = summarize(loaded, top)
        _write_tables(rows, tmp)
        importances = _importances(loaded, len(complete), notes)
        plt = _pyplot()
        _history_png(plt, loaded, trials, tmp / "optimization_history.png")
        if not _curves_png(plt, trials, tmp / "intermediate_values.png"):
            notes.append("no trial reported intermediate values: intermediate_values.png skipped")
        if importances:
            _importances_png(plt, importances, tmp / "param_importances.png")
        _html_figures(loaded, importances is not None, tmp, notes)
        summary.update(_summary(loaded, storage_url, counts, rows, importances, notes))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_index_html(tmp, summary, rows)

    write_dir(folder, REPORT_KIND, fill, overwrite=overwrite, protected=protected)
    files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))
    return ReportResult(folder=folder, files=files, notes=tuple(notes), summary=summary)


def study_paths(storage_url: str | None, study: str) -> list[Path]:
    """What an output folder may not lie in or contain: the study's folder and SQLite file."""
    text = DEFAULT_STORAGE if storage_url is None else storage_url.strip()
    if not text:
        return []  # opening the storage says what is wrong with an empty URL
    paths = [artifact_dir(text, study).parent]
    parsed = parse_url(text)
    database = sqlite_file(parsed) if is_sqlite(parsed) else None
    if database is not None:
        paths.append(database)
    return paths


def _count_text(counts: dict[str, int]) -> str:
    shown = [f"{n} {state}" for state, n in counts.items() if n and state != "finished"]
    return ", ".join(shown) if shown else "no trials"


def _backbone(row: dict[str, Any]) -> str:
    value = row["user_attrs"].get(BACKBONE_ATTR, row["params"].get("backbone", ""))
    return str(value)


def _write_tables(rows: list[dict[str, Any]], folder: Path) -> None:
    names = sorted({name for row in rows for name in row["params"]})
    with open(folder / "top_trials.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["rank", "number", "value", "state", "backbone", "duration_s"]
            + [f"param_{n}" for n in names]
        )
        for rank, row in enumerate(rows, 1):
            duration = "" if row["duration"] is None else f"{row['duration']:.1f}"
            values = [row["params"].get(n, "") for n in names]
            cells = [rank, row["number"], row["value"], row["state"], _backbone(row), duration]
            writer.writerow([csv_cell(c) for c in [*cells, *values]])
    lines = [
        "| rank | trial | value | state | backbone | duration (s) | params |",
        "|---:|---:|---:|---|---|---:|---|",
    ]
    for rank, row in enumerate(rows, 1):
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(row["params"].items()))
        duration = "" if row["duration"] is None else f"{row['duration']:.0f}"
        cells = [
            str(rank),
            str(row["number"]),
            f"{row['value']:.4f}",
            row["state"],
            _backbone(row),
            duration,
            params.replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (folder / "top_trials.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _importances(study: optuna.Study, n_complete: int, notes: list[str]) -> dict[str, float] | None:
    if n_complete < 2:
        notes.append(
            f"parameter importances need at least 2 completed trials (this study has "
            f"{n_complete}): param_importances.png skipped"
        )
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study)
    except Exception as e:  # an optional analysis: say why it is missing, keep the rest
        notes.append(
            f"parameter importances could not be computed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no message'}): param_importances skipped"
        )
        return None
    if not values:
        notes.append("the study has no parameters: param_importances.png skipped")
        return None
    return {name: float(v) for name, v in values.items()}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _history_png(plt: Any, study: optuna.Study, trials: Sequence[FrozenTrial], path: Path) -> None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    better: Callable[..., float] = max if study.direction == StudyDirection.MAXIMIZE else min
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    xs = [t.number for t in complete]
    ys = [float(t.value or 0.0) for t in complete]
    ax.scatter(xs, ys, color="tab:blue", s=18, label="completed trial", zorder=3)
    best: list[float] = []
    for y in ys:
        best.append(y if not best else better(best[-1], y))
    ax.step(xs, best, where="post", color="tab:red", label="best so far", zorder=2)
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            color="tab:orange",
            s=18,
            label="pruned (last reported value)",
            zorder=3,
        )
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel(_objective_name(study))
    ax.set_title(f"optimization history of study '{study.study_name}'")
    _save(plt, fig, ax, path)


def _curves_png(plt: Any, trials: Sequence[FrozenTrial], path: Path) -> bool:
    with_values = [t for t in trials if t.intermediate_values]
    if not with_values:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    labelled: set[TrialState] = set()
    for t in with_values:
        steps = sorted(t.intermediate_values)
        colour = _STATE_COLOURS.get(t.state, "tab:gray")
        label = None if t.state in labelled else t.state.name.lower()
        labelled.add(t.state)
        ax.plot(
            steps,
            [t.intermediate_values[s] for s in steps],
            color=colour,
            alpha=0.8,
            linewidth=1.2,
            marker="." if len(steps) < 30 else None,
            label=label,
        )
    ax.set_xlabel("step (epoch over both training phases)")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("reported validation value")
    ax.set_title(f"learning curves of {len(with_values)} trials")
    _save(plt, fig, ax, path)
    return True


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> None:
    """Grid, legend, tight layout; the PNG written and the figure closed."""
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _importances_png(plt: Any, importances: dict[str, float], path: Path) -> None:
    names = list(importances)[::-1]  # most important at the top
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(names)), dpi=100)
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.3f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of the objective's variance, sums to 1)")
    ax.set_title("parameter importances")
    ax.set_xlim(0, max(1e-9, max(importances.values())) * 1.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _html_figures(
    study: optuna.Study, with_importances: bool, folder: Path, notes: list[str]
) -> None:
    """The interactive plotly versions of the figures, when plotly is installed."""
    if importlib.util.find_spec("plotly") is None:
        notes.append("plotly is not installed, so no HTML figures (pip install plotly for them)")
        return
    from optuna import visualization as vis

    figures: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": vis.plot_optimization_history,
        "intermediate_values": vis.plot_intermediate_values,
    }
    if with_importances:
        figures["param_importances"] = vis.plot_param_importances
    for name, plot in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = plot(study)
            # plotly.min.js is written once beside the pages, so they work offline
            figure.write_html(folder / f"{name}.html", include_plotlyjs="directory")
        except Exception as e:  # optional output: note it and keep the PNG report
            notes.append(f"{name}.html skipped ({type(e).__name__}: {e})")


def _objective_name(study: optuna.Study) -> str:
    return str(study.user_attrs.get(OBJECTIVE_ATTR, "objective value"))


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _summary(
    study: optuna.Study,
    storage_url: str | None,
    counts: dict[str, int],
    rows: list[dict[str, Any]],
    importances: dict[str, float] | None,
    notes: list[str],
) -> dict[str, Any]:
    best = rows[0]
    keep = REPORTED_TRIAL_ATTRS
    return _json_value(
        {
            "study": study.study_name,
            "storage": mask_url(storage_url),
            "direction": study.direction.name.lower(),
            "objective": study.user_attrs.get(OBJECTIVE_ATTR),
            "counts": counts,
            "best": {
                "number": best["number"],
                "value": best["value"],
                "params": best["params"],
                "duration_s": best["duration"],
                **{k: best["user_attrs"][k] for k in keep if k in best["user_attrs"]},
            },
            "top_trials": [
                {
                    "number": row["number"],
                    "value": row["value"],
                    "backbone": _backbone(row),
                    "params": row["params"],
                    "duration_s": row["duration"],
                }
                for row in rows
            ],
            "param_importances": importances,
            "notes": notes,
            "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "blood_automl_version": __version__,
        }
    )
