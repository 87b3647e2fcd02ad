"""Memory over many trials: a search process stays flat while trials run in their own processes.

Baseline (same run): small trials trained one after another in one process with
``trainer.release()`` (clear_session + gc) between them; TensorFlow still keeps memory from
every model. Then a real ``run_search`` (smoke preset, from scratch) of as many trials, each
trained in a child process. Prints resident memory (RSS) after each trial, the growth per
trial over the second half (least squares) for both, and their ratio; exits 1 when the
search process grows more than --max-mb-per-trial.

    python bench/memory.py [--trials 10] [--max-mb-per-trial 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def in_process(trials: int) -> list[float]:
    """RSS after each of ``trials`` small trials trained in this process (release() between)."""
    from blood_automl.spaces import TrialConfig
    from blood_automl.trainer import predict, release, train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(256, 96, 96, 3), dtype=np.uint8)
    y = np.arange(256) % 8
    names = tuple(f"c{i}" for i in range(8))
    rss = []
    for i in range(trials):
        config = TrialConfig(
            backbone="MobileNet-0.25",
            dense_units=(32 + 16 * (i % 3),),  # shapes change between trials, as in a search
            head_epochs=1,
            finetune_epochs=1,
            batch_size=32,
        )
        result = train(
            config, x[:192], y[:192], names, x_val=x[192:], y_val=y[192:], weights="none"
        )
        predict(result.model, x[192:])
        del result
        release()
        rss.append(rss_mb())
        print(f"  in-process trial {i + 1:>2}: RSS {rss[-1]:7.1f} MiB", flush=True)
    return rss


def isolated(trials: int, folder: str) -> list[float]:
    """RSS of a search process after each trial, trials trained in child processes."""
    from optuna.trial import FrozenTrial
    from rich.console import Console

    import blood_automl.search.run as run
    from blood_automl.search import SearchOptions, run_search

    rng = np.random.default_rng(1)
    data = os.path.join(folder, "bench.npz")
    np.savez(
        data,
        images=rng.integers(0, 256, size=(320, 96, 96, 3), dtype=np.uint8),
        labels=np.arange(320) % 8,
    )
    rss: list[float] = []
    streak_init = run.FailureStreak.__call__

    def record(self: run.FailureStreak, study: object, trial: FrozenTrial) -> None:
        streak_init(self, study, trial)  # type: ignore[arg-type]
        rss.append(rss_mb())
        print(f"  isolated trial {len(rss):>2}: search process RSS {rss[-1]:7.1f} MiB", flush=True)

    run.FailureStreak.__call__ = record  # type: ignore[method-assign]
    options = SearchOptions(
        data=data,
        trials=trials,
        study="bench",
        storage=f"sqlite:///{folder}/bench.db",
        preset="smoke",
        weights="none",
        recipes=False,
        clean=False,
        workers=1,
    )
    run_search(options, Console(quiet=True))
    return rss


def growth(rss: list[float]) -> float:
    """Least-squares MiB per trial over the second half."""
    half = np.arange(len(rss) // 2, len(rss))
    return float(np.polyfit(half, np.asarray(rss)[half], 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--max-mb-per-trial", type=float, default=10.0)
    args = parser.parse_args()
    import tempfile

    started = time.monotonic()
    print("baseline: trials trained in one process")
    base = in_process(args.trials)
    with tempfile.TemporaryDirectory() as folder:
        print("blood-automl search: each trial in its own process")
        iso = isolated(args.trials, folder)
    g_base, g_iso = growth(base), growth(iso)
    print(f"trials: {args.trials} each way in {time.monotonic() - started:.0f} s")
    print(f"in one process: {base[0]:.0f} -> {base[-1]:.0f} MiB, {g_base:+.1f} MiB per trial")
    print(f"search process: {iso[0]:.0f} -> {iso[-1]:.0f} MiB, {g_iso:+.1f} MiB per trial")
    print(
        f"growth per trial, search / one process: {g_iso / g_base if g_base else float('nan'):.3f}"
    )
    if g_iso > args.max_mb_per_trial:
        print(f"FAIL: the search process grew more than {args.max_mb_per_trial} MiB per trial")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
