"""How well each pruner step predicts a trial's final score, under two ways of counting steps.

Reads the completed trials of a finished study (their per-epoch validation history is stored
with them) and compares two rules for the step a pruner sees at each epoch:

- ``global``: every epoch of both phases under one counter (the rule of space schema 1): a
  two-phase trial's step 3 is a head-phase score, a single-phase trial's is a fine-tuned one;
- ``last-phase``: only the epochs of the trial's last phase, counted from 1 (today's rule):
  step k is always the k-th epoch of backbone training.

For each step k it prints, over the trials that reached it, the Spearman rank correlation
between the value at step k and the trial's best value, and how many of the study's 3 best
trials a median rule at step k would have stopped (value below the median of the trials at
that step). A pruner decides well where the correlation is high and the best trials survive.

    python bench/pruning.py --storage sqlite:///path/study.db --study bench [--study-2 ...]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


def steps_of(history: Sequence[dict[str, Any]], rule: str, key: str) -> dict[int, float]:
    """Step -> validation value of one trial's history under ``rule``."""
    rows = [r for r in history if key in r]
    if rule == "global":
        return {i + 1: float(r[key]) for i, r in enumerate(rows)}
    last = rows[-1]["phase"] if rows else None
    mine = [r for r in rows if r["phase"] == last]
    return {i + 1: float(r[key]) for i, r in enumerate(mine)}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def analyse(
    trials: list[dict[str, Any]], rule: str, key: str, top: int = 3
) -> list[dict[str, Any]]:
    """Per step: trials reaching it, rank correlation with the final best, best trials stopped."""
    curves = [(t["number"], steps_of(t["history"], rule, key), t["value"]) for t in trials]
    best = {n for n, _, _ in sorted(curves, key=lambda c: -c[2])[:top]}
    rows = []
    for k in range(1, max((max(c, default=0) for _, c, _ in curves), default=0) + 1):
        at = [(n, c[k], v) for n, c, v in curves if k in c]
        if len(at) < 4:
            continue
        median = statistics.median(x for _, x, _ in at)
        stopped = sum(1 for n, x, _ in at if n in best and x < median)
        rows.append(
            {
                "step": k,
                "trials": len(at),
                "spearman": spearman([x for _, x, _ in at], [v for _, _, v in at]),
                "best_stopped": stopped,
            }
        )
    return rows


def load(storage: str, study: str) -> list[dict[str, Any]]:
    """The completed trials of a study: number, best value, history."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    s = optuna.load_study(study_name=study, storage=storage)
    return [
        {"number": t.number, "value": float(t.value), "history": t.user_attrs.get("history", [])}
        for t in s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", action="append", required=True)
    parser.add_argument("--study", default="bench")
    parser.add_argument("--key", default="val_accuracy")
    args = parser.parse_args(argv)
    trials: list[dict[str, Any]] = []
    for i, storage in enumerate(args.storage):
        for t in load(storage, args.study):
            trials.append({**t, "number": (i, t["number"])})
    phases = [{r["phase"] for r in t["history"]} for t in trials]
    two = sum(1 for p in phases if "head" in p and "finetune" in p)
    print(f"{len(trials)} completed trials ({two} head-first, {len(trials) - two} single-phase)")
    for rule in ("global", "last-phase"):
        print(
            f"\nrule {rule}:\n| step | trials | Spearman with final | of the 3 best, below the median |"
        )
        print("| --- | --- | --- | --- |")
        for row in analyse(trials, rule, args.key):
            rho = "n/a" if np.isnan(row["spearman"]) else f"{row['spearman']:+.2f}"
            print(f"| {row['step']} | {row['trials']} | {rho} | {row['best_stopped']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
