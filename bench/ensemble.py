"""refit-best --top 3 against the best trial alone: validation (the choice) and test, TTA off and on.

Per seed, in its own work folder: ``blood-automl search`` with a fixed number of trials
(MobileNet-0.25 with the ImageNet weights file, as bench/quality.py uses, on its fixed
stratified split), then ``blood-automl refit-best --top 3 --tta``. The export's
metrics.json holds every figure the table needs: K = 1 is member 0 (the best trial) alone,
K = 3 the exported soft vote; on validation both are the members' twins (trained on the
train split only, ``validation_by_k``), on test the models refitted on train + validation.

    .venv/bin/python bench/ensemble.py                   # 2 seeds, 2400 images, 12 trials each
    .venv/bin/python bench/ensemble.py --quick --seeds 1 # 800 images, 6 trials

The parent process never imports TensorFlow: the CLI runs in child processes and the parent
reads the JSON they write.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import (  # noqa: E402  (bench/quality.py: the same data, weights and split)
    DEFAULT_DATA,
    DEFAULT_WEIGHTS,
    QUICK_IMAGES,
    SPACE_FILE,
    SPLITS,
    WEIGHTS_FILE,
    bench_split,
    load_npz,
)

TOP = 3
TRIALS = 12
QUICK_TRIALS = 6
SCORES = ("accuracy", "balanced_accuracy", "macro_f1")
STUDY = "bench"


def child_env() -> dict[str, str]:
    """The CLI's environment: this checkout's sources first, quiet TensorFlow."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli(argv: list[str], work: Path, log: Path) -> tuple[int, float]:
    """``blood-automl ARGV`` in ``work``, output appended to ``log``; exit code and seconds."""
    start = time.time()
    with open(log, "ab") as f:
        rc = subprocess.call(
            [sys.executable, "-m", "blood_automl", *argv],
            cwd=work,
            env=child_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return rc, time.time() - start


def run_seed(seed: int, split: Path, weights: Path, trials: int, work: Path) -> dict[str, Any]:
    """Search ``trials`` trials, refit the top 3 with TTA; the figures of metrics.json."""
    work.mkdir(parents=True)
    (work / "space.toml").write_text(SPACE_FILE)
    log, store = work / "cli.log", f"sqlite:///{work / 'study.db'}"
    search = ["search", "--data", str(split), "--space", "space.toml", "--weights", str(weights)]
    search += ["--seed", str(seed), "--storage", store, "--study", STUDY]
    search += ["--trials", str(trials), "--workers", "1"]
    rc, search_s = cli(search, work, log)
    if rc != 0:
        return {"seed": seed, "error": f"search exited with {rc}; see {log}"}
    refit = ["refit-best", "--storage", store, "--study", STUDY, "--top", str(TOP), "--tta"]
    rc, refit_s = cli([*refit, "--out", "export"], work, log)
    if rc != 0:
        return {"seed": seed, "error": f"refit-best exited with {rc}; see {log}"}
    metrics = json.loads((work / "export" / "metrics.json").read_text())
    return {"seed": seed, "search_s": search_s, "refit_s": refit_s, **figures(metrics)}


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """K = 1 and K = TOP on validation (twins) and test, TTA off and on, from metrics.json."""
    entry = metrics["ensemble"]
    by_k = {row["k"]: row for row in entry["validation_by_k"]}
    first = entry["members"][0]

    def of(source: dict[str, Any]) -> dict[str, float]:
        return {s: float(source[s]) for s in SCORES}

    return {
        "members": [
            {k: m[k] for k in ("trial", "backbone", "objective_value")} for m in entry["members"]
        ],
        "rows": {
            ("validation", 1, False): of(by_k[1]),
            ("validation", 1, True): of(by_k[1]["tta"]),
            ("validation", TOP, False): of(by_k[TOP]),
            ("validation", TOP, True): of(by_k[TOP]["tta"]),
            ("test", 1, False): of(first["test"]),
            ("test", 1, True): of(first["test_tta"]),
            ("test", TOP, False): of(metrics),
            ("test", TOP, True): of(metrics["tta"]),
        },
        "validation_nll": {1: by_k[1]["nll"], TOP: by_k[TOP]["nll"]},
        "temperature": metrics["calibration"].get("temperature"),
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per seed, split and TTA: K = 1, K = TOP and the difference."""
    lines = [
        f"| seed | split | TTA | K=1 accuracy | K={TOP} accuracy | diff | K=1 macro-F1 "
        f"| K={TOP} macro-F1 | diff | K=1 balanced | K={TOP} balanced | diff |",
        "|" + " --- |" * 12,
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['seed']} | error: {r['error']} |")
            continue
        for split in ("validation", "test"):
            for tta in (False, True):
                one, many = r["rows"][(split, 1, tta)], r["rows"][(split, TOP, tta)]
                cells = []
                for s in ("accuracy", "macro_f1", "balanced_accuracy"):
                    cells += [f"{one[s]:.4f}", f"{many[s]:.4f}", f"{many[s] - one[s]:+.4f}"]
                lines.append(
                    f"| {r['seed']} | {split} | {'on' if tta else 'off'} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="npz (plain or MedMNIST)")
    p.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"folder with {WEIGHTS_FILE}"
    )
    p.add_argument("--seeds", type=int, default=2, help="how many seeds (0, 1, ...)")
    p.add_argument(
        "--quick", action="store_true", help=f"{QUICK_IMAGES} images, {QUICK_TRIALS} trials"
    )
    p.add_argument("--trials", type=int, default=None, help=f"trials per search ({TRIALS})")
    p.add_argument(
        "--work", type=Path, default=None, help="new output folder (default under bench/.ensemble/)"
    )
    args = p.parse_args(argv)
    problems = []
    if not args.data.is_file():
        problems.append(f"--data {args.data} is not a file; give an npz")
    if not (args.weights / WEIGHTS_FILE).is_file():
        problems.append(f"--weights {args.weights} holds no {WEIGHTS_FILE}; give its folder")
    if args.seeds < 1:
        problems.append(f"--seeds {args.seeds} must be >= 1")
    args.trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    if args.trials < TOP:
        problems.append(f"--trials {args.trials} must be >= {TOP}")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        problems.append(f"--work {args.work} is not empty; give a new folder")
    if problems:
        p.exit(1, "error: " + "; ".join(problems) + "\n")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.work is None:
        (HERE / ".ensemble").mkdir(exist_ok=True)
        work = Path(
            tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=HERE / ".ensemble")
        )
    else:
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    arrays = bench_split(load_npz(args.data.resolve()), QUICK_IMAGES if args.quick else None)
    split = work / "split.npz"
    import numpy as np

    np.savez(split, **arrays)  # type: ignore[arg-type]
    sizes = {s: len(arrays[f"{s}_labels"]) for s in SPLITS}
    print(f"data: {args.data} -> {split} {sizes}; {args.trials} trials, top {TOP}, TTA")
    started, results = time.time(), []
    for seed in range(args.seeds):
        print(f"seed {seed}: running ...", flush=True)
        results.append(
            run_seed(seed, split, args.weights.resolve(), args.trials, work / f"seed_{seed}")
        )
    load_end = os.getloadavg()
    print(f"load average at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_end)}")
    print(f"wall time: {(time.time() - started) / 60:.1f} min")
    print(table(results))
    for r in results:
        if "error" not in r:
            members = ", ".join(
                f"trial {m['trial']} ({m['objective_value']:.4f})" for m in r["members"]
            )
            print(
                f"seed {r['seed']}: members {members}; T {r['temperature']}; validation NLL "
                f"K=1 {r['validation_nll'][1]:.4f}, K={TOP} {r['validation_nll'][TOP]:.4f}; "
                f"search {r['search_s'] / 60:.1f} min, refit {r['refit_s'] / 60:.1f} min"
            )
    report = [
        {
            **r,
            "rows": [
                {"split": k[0], "k": k[1], "tta": k[2], **v} for k, v in r.get("rows", {}).items()
            ],
        }
        for r in results
    ]
    out = work / "ensemble.json"
    out.write_text(
        json.dumps(
            {"sizes": sizes, "trials": args.trials, "results": report}, indent=2, default=str
        )
    )
    print(f"all figures: {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
