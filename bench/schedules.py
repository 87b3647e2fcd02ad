"""Training schedules on real PBC images: the default configuration against single changes.

Trains MobileNet-0.25 (the ImageNet file of ``--weights``) on a fixed stratified split of
``../shared/data/pbc_96_small.npz`` (train 1,536 / validation 384 / test 480: 20% test,
then 20% of the rest for validation, scikit-learn, seed 0) with the trainer a search
uses (early stopping on the validation score, best weights kept), once per variant and
seed. Prints per variant and seed the best validation accuracy, the test accuracy of the
kept weights, the epochs and the seconds, then per variant the median test accuracy and
its difference to the default's.

    python bench/schedules.py                                  # every variant, seeds 0 1
    python bench/schedules.py --variants default lr-1e-3 --seeds 0

A variant is the default ``TrialConfig`` (backbone MobileNet-0.25) with the fields below
changed; the default is what the search queues as its first trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "lr-5e-4": {"finetune_lr": 5e-4},
    "lr-1e-3": {"finetune_lr": 1e-3},
    "lr-4e-3": {"finetune_lr": 4e-3},
    "warmup-1": {"warmup_epochs": 1},
    "bn-frozen": {"batch_norm": "frozen"},
    "bn-frozen-lr-5e-4": {"batch_norm": "frozen", "finetune_lr": 5e-4},
    "no-randaugment": {"randaugment_ops": 0},
    # The cpu preset's previous fixed schedule: head 4 epochs, then the top half 4 epochs.
    "two-phase-half": {
        "schedule": "two_phase", "head_epochs": 4, "finetune_epochs": 4, "batch_norm": "frozen",
        "unfreeze_fraction": 0.5, "finetune_lr": 1e-4,
    },
}  # fmt: skip


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices: 20% test, then 20% of the rest for validation."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=0.2, stratify=labels, random_state=0)
    train, val = train_test_split(rest, test_size=0.2, stratify=labels[rest], random_state=0)
    return train, val, test


def run(name: str, seed: int, data: dict[str, np.ndarray], weights: str) -> dict[str, Any]:
    """Train one variant with one seed; its validation and test accuracy."""
    from blood_automl import trainer
    from blood_automl.spaces.config import TrialConfig

    x, y, names = data["images"], data["labels"].astype(np.int64), list(data["class_names"])
    tr, va, te = split(y)
    config = dataclasses.replace(TrialConfig(backbone="MobileNet-0.25"), **VARIANTS[name])
    started = time.monotonic()
    result = trainer.train(
        config, x[tr], y[tr], names, x_val=x[va], y_val=y[va], weights=weights, seed=seed
    )
    test = float((trainer.predict(result.model, x[te]).argmax(1) == y[te]).mean())
    trainer.release()
    return {
        "variant": name,
        "seed": seed,
        "val": float(result.best_value or 0.0),
        "test": test,
        "epochs": [result.head_epochs, result.finetune_epochs],
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "pbc_96_small.npz"))
    parser.add_argument("--weights", default=str(SHARED / "weights"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"error: no data file {args.data}; give an npz with --data", file=sys.stderr)
        return 1
    with np.load(args.data) as f:
        data = {k: f[k] for k in ("images", "labels", "class_names")}
    rows = []
    for name in args.variants:
        for seed in args.seeds:
            row = run(name, seed, data, args.weights)
            rows.append(row)
            print(json.dumps(row), flush=True)
    default = [r["test"] for r in rows if r["variant"] == "default"]
    base = statistics.median(default) if default else None
    print("\n| variant | median test accuracy | vs default | median epochs | median seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.variants:
        mine = [r for r in rows if r["variant"] == name]
        test = statistics.median(r["test"] for r in mine)
        diff = "" if base is None else f"{100 * (test - base):+.1f} points"
        epochs = statistics.median(sum(r["epochs"]) for r in mine)
        seconds = statistics.median(r["seconds"] for r in mine)
        print(f"| {name} | {test:.4f} | {diff} | {epochs:g} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
