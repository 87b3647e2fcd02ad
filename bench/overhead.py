"""Per-trial overhead of a search: trial workers serving many trials against a fresh process per trial.

Runs the same real search twice through the CLI (smoke preset, pruner none, no recipes,
small real data): once with trial workers as shipped, once with
``BLOOD_AUTOML_TRIALS_PER_WORKER=1`` (every trial in a fresh process). A trial's overhead is
its wall time in the study (Optuna's ``datetime_complete - datetime_start``: sampling, process
start, storage, figures, bookkeeping) minus
``train_seconds`` (the time inside ``trainer.train``). Prints median and p90 overhead for
both and their ratio, where the worker's own time went (``worker_seconds``), and the
worker's resident memory after every trial, with its replacements and why.

    python bench/overhead.py [--trials 30] [--images 400] [--data NPZ] [--weights DIR|none]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TRIALS_ENV = "BLOOD_AUTOML_TRIALS_PER_WORKER"


def subsample(source: Path, images: int, out: Path) -> Path:
    """``images`` real images, the same number from each class, as an .npz at ``out``."""
    with np.load(source, allow_pickle=False) as f:
        x, y = f["images"], f["labels"]
        names = f["class_names"] if "class_names" in f.files else None
    classes = np.unique(y)
    per = images // len(classes)
    keep = np.concatenate([np.flatnonzero(y == c)[:per] for c in classes])
    arrays: dict[str, Any] = {"images": x[keep], "labels": y[keep]}
    if names is not None:
        arrays["class_names"] = names
    np.savez(out, **arrays)
    return out


def run_search(folder: Path, data: Path, trials: int, weights: str, fresh: bool) -> float:
    """``blood-automl search`` in ``folder``; its wall time. Fails loudly when it fails."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop(TRIALS_ENV, None)
    if fresh:
        env[TRIALS_ENV] = "1"
    argv = [sys.executable, "-m", "blood_automl", "search", "--study", "bench"]
    argv += ["--storage", f"sqlite:///{folder / 'bench.db'}", "--data", str(data)]
    argv += ["--trials", str(trials), "--preset", "smoke", "--weights", weights]
    argv += ["--pruner", "none", "--no-recipes"]
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(folder / "search.out", "wb") as out:
        done = subprocess.run(
            argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    if done.returncode != 0:
        tail = (folder / "search.out").read_text(errors="replace")[-3000:]
        raise SystemExit(f"the search in {folder} failed ({done.returncode}):\n{tail}")
    return time.monotonic() - started


def trials_of(folder: Path) -> list[Any]:
    """The study's trials, by number."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{folder / 'bench.db'}")
    return sorted(study.trials, key=lambda t: t.number)


def overheads(trials: list[Any]) -> list[float]:
    """Wall time minus ``train_seconds`` of every trial that trained."""
    return [
        (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["train_seconds"]
        for t in trials
        if t.datetime_complete is not None and "train_seconds" in t.user_attrs
    ]


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def replacements(trials: list[Any], limit_trials: int, limit_mib: float) -> list[str]:
    """Each fresh worker after the first, with the rule that retired the one before."""
    found = []
    for before, t in itertools.pairwise(trials):
        if t.user_attrs.get("worker_trials") != 1:
            continue
        served = before.user_attrs.get("worker_trials")
        if before.state.name == "FAIL":
            why = "the trial before failed"
        elif served == limit_trials:
            why = f"{served} trials served (the limit)"
        else:
            why = f"memory past +{limit_mib:.0f} MiB after {served} trials"
        found.append(f"before trial {t.number}: {why}")
    return found


def show_worker(trials: list[Any], limit_trials: int, limit_mib: float) -> None:
    """RSS after each trial, per-worker growth, and the replacements."""
    rss = [t.user_attrs.get("worker_rss_mib") for t in trials]
    first: float | None = None
    worst = 0.0
    for t, r in zip(trials, rss, strict=True):
        if t.user_attrs.get("worker_trials") == 1:
            first = r
        growth = "" if r is None or first is None else f"  +{r - first:6.1f} MiB in this worker"
        if r is not None and first:
            worst = max(worst, (r - first) / first)
        print(
            f"  trial {t.number:>2}: worker {t.user_attrs.get('worker_pid')} "
            f"trial {t.user_attrs.get('worker_trials')}, RSS {r} MiB{growth}"
        )
    known = [r for r in rss if r is not None]
    if known:
        print(
            f"  RSS trial 1 -> {len(trials)}: {known[0]:.0f} -> {known[-1]:.0f} MiB "
            f"({(known[-1] - known[0]) / known[0]:+.1%}); the largest growth within one worker "
            f"above its first trial: {worst:+.1%}; highest RSS {max(known):.0f} MiB"
        )
    found = replacements(trials, limit_trials, limit_mib)
    print(f"  replacements: {len(found)}" + "".join(f"\n    {line}" for line in found))


def summarize(name: str, trials: list[Any], wall: float) -> list[float]:
    """Print a mode's overhead figures; its overheads."""
    over = overheads(trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    train = [t.user_attrs["train_seconds"] for t in trials if "train_seconds" in t.user_attrs]
    inside = [
        t.user_attrs["worker_seconds"] - t.user_attrs["train_seconds"]
        for t in trials
        if "worker_seconds" in t.user_attrs and "train_seconds" in t.user_attrs
    ]
    print(
        f"{name}: {len(trials)} trials ({failed} failed) in {wall:.0f} s; overhead per trial "
        f"median {statistics.median(over):.2f} s, p90 {p90(over):.2f} s, mean "
        f"{statistics.mean(over):.2f} s; train_seconds median {statistics.median(train):.1f} s"
    )
    if inside:
        print(
            f"  of which in the worker besides training (log, store, data check, figures, "
            f"release): median {statistics.median(inside):.2f} s, p90 {p90(inside):.2f} s"
        )
    return over


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "pbc_96_small.npz")
    weights = SHARED / "weights"
    parser.add_argument("--weights", default=str(weights) if weights.is_dir() else "none")
    parser.add_argument("--keep", type=Path, help="keep the two studies in this folder")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no data at {args.data}; pass --data NPZ")
    sys.path.insert(0, str(ROOT / "src"))
    from blood_automl.search.isolate import MAX_RSS_GROWTH_MIB
    from blood_automl.search.options import MAX_TRIALS_PER_WORKER

    print(f"load average at start: {os.getloadavg()}; weights: {args.weights}")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        data = subsample(args.data, args.images, Path(tmp) / "small.npz")
        figures = {}
        for name, fresh in (("trial workers", False), ("fresh process per trial", True)):
            folder = base / ("fresh" if fresh else "workers")
            wall = run_search(folder, data, args.trials, args.weights, fresh)
            trials = trials_of(folder)
            figures[name] = summarize(name, trials, wall)
            show_worker(trials, 1 if fresh else MAX_TRIALS_PER_WORKER, MAX_RSS_GROWTH_MIB)
    workers, fresh_ = figures["trial workers"], figures["fresh process per trial"]
    ratio = statistics.median(workers) / statistics.median(fresh_)
    print(
        f"median overhead, trial workers / fresh process: {ratio:.3f} "
        f"({statistics.median(workers):.2f} s / {statistics.median(fresh_):.2f} s); "
        f"p90 {p90(workers):.2f} s / {p90(fresh_):.2f} s"
    )
    print(f"load average at end: {os.getloadavg()}")
    met = statistics.median(workers) < 1.0
    print("target (median overhead < 1 s): " + ("met" if met else "NOT met"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
