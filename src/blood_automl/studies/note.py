"""The study's note in optuna-dashboard: its objective, settings and searched parameters by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from blood_automl.studies.dashboard_notes import read_note, write_note
from blood_automl.studies.records import (
    DATA_FINGERPRINT_ATTR,
    IMAGE_SIZE_ATTR,
    INTERRUPTED_ATTR,
    OBJECTIVE_ATTR,
    PRUNER_ATTR,
    SAMPLER_ATTR,
    SEED_ATTR,
    SPACE_ATTR,
    SURPLUS_ATTR,
)
from blood_automl.studies.study import metric_name


def study_note(study: optuna.Study) -> str | None:
    """Markdown describing a blood-automl study, or None for a study without a stored space.

    The searched parameters are listed under the names Optuna gives them, the names every
    trial's *Parameter* list in the dashboard shows; fixed ones follow with their values.
    """
    attrs = study.user_attrs
    space = attrs.get(SPACE_ATTR)
    if not isinstance(space, Mapping) or not isinstance(space.get("params"), Mapping):
        return None
    objective = metric_name(str(attrs.get(OBJECTIVE_ATTR, "accuracy")))
    searched = {k: v for k, v in space["params"].items() if _searched(v)}
    fixed = {k: v["value"] for k, v in space["params"].items() if not _searched(v)}
    lines = [
        f"## {study.study_name}: {objective}, maximized",
        "",
        f"Space **{space.get('name', '?')}** (version {space.get('version', '?')})"
        + (f": {space['description']}" if space.get("description") else ""),
        "",
        f"Sampler {attrs.get(SAMPLER_ATTR, '?')}, pruner {attrs.get(PRUNER_ATTR, '?')}, "
        f"seed {attrs.get(SEED_ATTR, '?')}; images {attrs.get(IMAGE_SIZE_ATTR, '?')} px, "
        f"data {str(attrs.get(DATA_FINGERPRINT_ATTR, '?'))[:12]}.",
        "",
        f"Interrupted and surplus trials (user attributes `{INTERRUPTED_ATTR}`, "
        f"`{SURPLUS_ATTR}`) are not counted towards `--trials`.",
        "",
        "| parameter | searched over |",
        "|---|---|",
        *(f"| {name} | {_domain(domain)} |" for name, domain in searched.items()),
    ]
    if fixed:
        lines += ["", "Fixed: " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + "."]
    return "\n".join(lines) + "\n"


def save_study_note(study: optuna.Study) -> None:
    """Write :func:`study_note` as the study's dashboard note, unless it says that already."""
    body = study_note(study)
    if body is None:
        return
    if read_note(study) != body:
        write_note(study, body)


def _searched(domain: Any) -> bool:
    return not (isinstance(domain, Mapping) and "value" in domain)


def _domain(domain: Any) -> str:
    if not isinstance(domain, Mapping):
        return str(domain)
    if "choices" in domain:
        return "one of " + ", ".join(str(c) for c in domain["choices"])
    text = f"{domain.get('low')} to {domain.get('high')}"
    if domain.get("step") is not None:
        text += f" in steps of {domain['step']}"
    return text + (" (log scale)" if domain.get("log") else "")
