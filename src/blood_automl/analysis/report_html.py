"""A study report as one self-contained HTML page: every figure as a data URI, every table inline."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blood_automl.studies.records import (
    BACKBONE_ATTR,
    BEST_STEP_ATTR,
    EPOCHS_ATTR,
    SEED_ATTR,
    TRAIN_SECONDS_ATTR,
)

INDEX = "index.html"
FIGURES = (
    (
        "optimization_history.png",
        "Optimization history",
        "objective value of each completed trial and the best so far",
    ),
    (
        "intermediate_values.png",
        "Learning curves",
        "validation value reported at each epoch, "
        "one line per trial, coloured by how the trial ended",
    ),
    (
        "param_importances.png",
        "Parameter importances",
        "share of the objective's variance explained by each parameter (fANOVA)",
    ),
)
_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f3f5f8; padding: 0 0.25em; }
"""


def write_index_html(folder: Path, summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``folder/index.html`` from ``summary``, the top ``rows`` and the PNGs in ``folder``."""
    path = folder / INDEX
    path.write_text(render_index(folder, summary, rows), encoding="utf-8")
    return path


def render_index(folder: Path, summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The page's HTML; it refers to no other file and no URL."""
    study = str(summary.get("study", ""))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(study)}: blood-automl study report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Study <code>{_e(study)}</code></h1>",
        f'<p class="sub">blood-automl {_e(summary.get("blood_automl_version", ""))} report, '
        f"written {_e(summary.get('written', ''))}</p>",
        "<h2>Summary</h2>",
        _summary_table(summary),
        "<h2>Best trial</h2>",
        _best_table(summary.get("best") or {}),
        "<h2>Figures</h2>",
        *_figures(folder),
        f"<h2>Top {len(rows)} trials</h2>",
        _top_table(rows),
        "<h2>Parameter importances</h2>",
        _importances_table(summary.get("param_importances")),
        *_notes(summary.get("notes") or []),
        _other_files(folder),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    return str(value)


def _table(header: Sequence[str], body: Sequence[Sequence[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>" if header else "<table><tbody>"]
    for row in body:
        cells = "".join(
            f'<td class="num">{_e(_value(c))}</td>' if i in numeric else f"<td>{_e(_value(c))}</td>"
            for i, c in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _summary_table(summary: dict[str, Any]) -> str:
    counts = summary.get("counts") or {}
    shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"
    body = [
        ("storage", summary.get("storage")),
        ("objective", f"{summary.get('objective')} ({summary.get('direction')})"),
        ("trials", shown),
    ]
    return _table((), body, set())


def _best_table(best: dict[str, Any]) -> str:
    body: list[tuple[str, Any]] = [
        ("trial", best.get("number")),
        ("value", best.get("value")),
        ("duration (s)", best.get("duration_s")),
    ]
    for key in (BACKBONE_ATTR, SEED_ATTR, EPOCHS_ATTR, BEST_STEP_ATTR, TRAIN_SECONDS_ATTR):
        if key in best:
            body.append((key, _compact(best[key])))
    body += [(f"param {k}", v) for k, v in sorted((best.get("params") or {}).items())]
    metrics = best.get("val_metrics")
    if isinstance(metrics, dict):
        body += [
            (f"validation {k}", v)
            for k, v in sorted(metrics.items())
            if isinstance(v, int | float | str)
        ]
    return _table((), body, set())


def _compact(value: Any) -> Any:
    return value if isinstance(value, int | float | str) else json.dumps(value)


def _figures(folder: Path) -> list[str]:
    shown: list[str] = []
    for name, title, caption in FIGURES:
        png = folder / name
        if not png.is_file():
            continue
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        shown.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(title)}">'
            f"<figcaption><b>{_e(title)}</b>: {_e(caption)}.</figcaption></figure>"
        )
    return shown or ["<p>No figures.</p>"]


def _top_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ("rank", "trial", "value", "state", "backbone", "duration (s)", "parameters")
    body = []
    for rank, row in enumerate(rows, 1):
        params = ", ".join(f"{k}={_value(v)}" for k, v in sorted(row["params"].items()))
        backbone = row["user_attrs"].get(BACKBONE_ATTR, row["params"].get("backbone", ""))
        duration = None if row["duration"] is None else round(float(row["duration"]), 1)
        body.append((rank, row["number"], row["value"], row["state"], backbone, duration, params))
    return _table(header, body, {0, 1, 2, 5})


def _importances_table(importances: Any) -> str:
    if not isinstance(importances, dict) or not importances:
        return "<p>Not computed (see the notes).</p>"
    body = [(name, value) for name, value in importances.items()]
    return _table(("parameter", "importance"), body, {1})


def _notes(notes: Sequence[str]) -> list[str]:
    if not notes:
        return []
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return ["<h2>Notes</h2>", f"<ul>{items}</ul>"]


def _other_files(folder: Path) -> str:
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != INDEX
    )
    listed = ", ".join(f"<code>{_e(n)}</code>" for n in names)
    return f"<h2>Files in this folder</h2><p>{listed}</p>"
