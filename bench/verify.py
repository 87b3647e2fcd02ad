"""Cost of checking a study's prepared data when a trial process loads it: none, quick, full.

Trial processes load the prepared arrays with ``load_prepared(..., verify="quick")`` (each
file's size and CRC-32 against the manifest); opening a study checks the sha256 values
(``verify=True``). This prints the median time of each over several loads of the same
prepared folder, and the ratios, so the per-trial cost of the quick check can be judged.

    .venv/bin/python bench/verify.py [--data ../shared/data/pbc_96_small.npz] [--reps 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from blood_automl.data import load_prepared, prepare_data

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pbc_96_small.npz"


def _median_seconds(verify: bool | str, folder: Path, reps: int) -> float:
    load_prepared(folder, verify=verify)  # page cache warm, as for a trial process
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        load_prepared(folder, verify=verify)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.data
        if not source.is_file():  # synthetic stand-in of the same shape
            print(f"{source} not found: 2,400 synthetic 96x96 images instead")
            rng = np.random.default_rng(0)
            source = Path(tmp) / "synthetic.npz"
            images = rng.integers(0, 256, (2400, 96, 96, 3), dtype=np.uint8)
            np.savez(source, images=images, labels=np.arange(2400) % 8)
        folder = Path(tmp) / "prepared"
        prepared = prepare_data(source, folder, clean=False)
        n = len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test)
        print(
            f"data: {n} images of {prepared.image_size}x{prepared.image_size}, {args.reps} loads each"
        )
        none = _median_seconds(False, folder, args.reps)
        quick = _median_seconds("quick", folder, args.reps)
        full = _median_seconds(True, folder, args.reps)
        print(f"load without a check   {none * 1000:7.1f} ms")
        print(f"quick (size + CRC-32)  {quick * 1000:7.1f} ms   {quick / full:.2f}x full")
        print(f"full (sha256)          {full * 1000:7.1f} ms")
        print(f"quick check's own cost {(quick - none) * 1000:7.1f} ms per trial process")


if __name__ == "__main__":
    main()
