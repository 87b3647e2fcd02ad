"""Hostile input for refit-best --top: counts below 1, with --trial, more than the study has."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from blood_automl.studies import open_storage
from hostile.harness import Case, Ctx, param, run_case

pytestmark = pytest.mark.slow


def _duplicate_store(ctx: Ctx) -> str:
    """A study with two completed trials of the same parameters and one with others."""
    path = ctx.tmp / "store" / "studies.db"
    path.parent.mkdir()
    url = f"sqlite:///{path}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="dup", direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
    for lr, value in ((1e-3, 0.9), (1e-3, 0.8)):
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value)
        )
    assert isinstance(storage, optuna.storages.RDBStorage)
    storage.engine.dispose()
    return url


def top_zero(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--top", "0"]


def top_negative(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--top", "-1"]


def top_with_trial(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--top", "2", "--trial", "0"]


def top_one_with_trial(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--top", "1", "--trial", "3"]


def top_without_any_store(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "nope", "--top", "2"]


def top_no_completed_trial(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "empty", "--storage", ctx.store("empty"), "--top", "2"]


def top_above_completed(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    return ["refit-best", "--study", found.study, "--storage", found.url, "--top", "2"]


def top_above_distinct(ctx: Ctx) -> list[str]:
    return ["refit-best", "--study", "dup", "--storage", _duplicate_store(ctx), "--top", "2"]


def top_out_not_ours(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    ctx.text("exports/fx/thesis.tex", "my thesis\n")
    return ["refit-best", "--study", found.study, "--storage", found.url, "--top", "2"]


def top_out_is_an_evaluation(ctx: Ctx) -> list[str]:
    found = ctx.searched()
    ctx.text("ens/.blood-automl-evaluation", json.dumps({"kind": "evaluation"}))
    argv = ["refit-best", "--study", found.study, "--storage", found.url, "--top", "3"]
    return [*argv, "--out", "ens", "--overwrite"]


CASES = [
    Case("refit-top-zero", top_zero, "--top must be >= 1, not 0", "give --top 1"),
    Case("refit-top-negative", top_negative, "--top must be >= 1, not -1", "give --top 1"),
    Case("refit-top-with-trial", top_with_trial, "--top 2 and --trial 0", "give one of them"),
    Case("refit-top-one-with-trial", top_one_with_trial, "--top 1 and --trial 3", "one of them"),
    Case("refit-top-no-store", top_without_any_store, "no study storage", "blood-automl search"),
    Case(
        "refit-top-no-completed", top_no_completed_trial, "no completed trial", "run blood-automl"
    ),
    Case(
        "refit-top-above-completed",
        top_above_completed,
        "--top 2 needs 2 completed trials with distinct parameters, but study 'fx' has 1",
        "give a smaller --top (at most 1) or run more trials",
    ),
    Case(
        "refit-top-above-distinct",
        top_above_distinct,
        "study 'dup' has 1",
        "give a smaller --top",
    ),
    Case("refit-top-out-not-ours", top_out_not_ours, "exports/fx", "--out"),
    Case("refit-top-out-evaluation", top_out_is_an_evaluation, "ens", "--out"),
]


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
