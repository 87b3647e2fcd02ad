"""Does Grad-CAM point at what the model uses? A deletion test on real images.

For each image, the pixels a heat map marks hottest (the top 20%) are replaced by the
image's background colour (the median of its top-left 8x8 corner), and the drop of the
predicted class's probability is measured; the same for the coldest 20% and for a random
20% of the pixels. A faithful map: deleting the hottest pixels hurts far more than
deleting random ones, and deleting the coldest ones hurts least. Two choices of feature
map are compared on the same images in the same run:

- ``explain``: the rule blood-automl uses (the last map of at least 6x6,
  ``blood_automl.export.explain.MIN_SIDE``);
- ``last map``: the baseline, the backbone's own last map (any map above 1x1; 3x3 for
  MobileNet at 96 px), the textbook Grad-CAM layer.

    .venv/bin/python bench/gradcam.py --export exports/blood-automl
    .venv/bin/python bench/gradcam.py --export DIR --data other.npz --images 240

The images are the test split of bench/quality.py's fixed split of ``--data`` (the split
``bench/ensemble.py`` searches and refits on), so an export made by that bench never saw
them. Any export of blood-automl works; the figures printed are means over the images.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality import DEFAULT_DATA, bench_split, load_npz, stratified_subsample  # noqa: E402

FRACTION = 0.2
RULES = {"explain": None, "last map": 2}  # None: blood-automl's MIN_SIDE


def _background(images: np.ndarray) -> np.ndarray:
    """(N, 3): each image's background colour, the median of its top-left 8x8 corner."""
    return np.median(images[:, :8, :8].reshape(len(images), -1, 3), axis=1)


def _masks(maps: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Boolean (N, H, W) masks of the hottest, coldest and random ``FRACTION`` of each map."""
    n, h, w = maps.shape
    k = int(FRACTION * h * w)
    out = {name: np.zeros((n, h * w), dtype=bool) for name in ("hottest", "coldest", "random")}
    for i in range(n):
        order = np.argsort(maps[i].ravel(), kind="stable")
        out["hottest"][i, order[-k:]] = True
        out["coldest"][i, order[:k]] = True
        out["random"][i, rng.choice(h * w, k, replace=False)] = True
    return {name: m.reshape(n, h, w) for name, m in out.items()}


def _drop(model: object, images: np.ndarray, classes: np.ndarray, mask: np.ndarray) -> float:
    """Mean drop of the class probability when the masked pixels become the background."""
    from blood_automl.export.explain import model_output

    rows = np.arange(len(images))
    before = model_output(model, images)[rows, classes]
    hidden = images.copy()
    fill = _background(images)
    for i in range(len(images)):
        hidden[i][mask[i]] = fill[i]
    return float(np.mean(before - model_output(model, hidden)[rows, classes]))


def run(export: Path, data: Path, n_images: int, seed: int) -> dict[str, dict[str, float]]:
    """Deletion drops per rule: {rule: {hottest, coldest, random, side}}."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from blood_automl.export.explain import MIN_SIDE, find_target, gradcam
    from blood_automl.export.predict import load_model, read_export

    split = bench_split(load_npz(data), None)
    keep = stratified_subsample(split["test_labels"], n_images, seed=seed)
    images = split["test_images"][keep].astype(np.float32)
    model = load_model(read_export(export))
    results: dict[str, dict[str, float]] = {}
    for rule, side in RULES.items():
        min_side = MIN_SIDE if side is None else side
        cams = gradcam(model, images, min_side=min_side)
        masks = _masks(cams.maps, np.random.default_rng(seed))
        found = {name: _drop(model, images, cams.classes, m) for name, m in masks.items()}
        from blood_automl.export.ensemble import members_of

        found["map_side"] = float(find_target(members_of(model)[0], min_side).shape[0])
        results[rule] = found
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| feature map | map side | drop, hottest 20% | drop, random 20% | drop, coldest 20% "
        "| hottest / random |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rule, r in results.items():
        ratio = r["hottest"] / r["random"] if r["random"] > 0 else float("nan")
        lines.append(
            f"| {rule} | {r['map_side']:.0f} | {r['hottest']:.3f} | {r['random']:.3f} "
            f"| {r['coldest']:.3f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an export of refit-best")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="npz (bench split)")
    parser.add_argument("--images", type=int, default=240, help="test images used")
    parser.add_argument("--seeds", type=int, default=2, help="image samples / random masks")
    args = parser.parse_args(argv)
    explain_gap, baseline_gap = [], []
    for seed in range(args.seeds):
        results = run(args.export, args.data, args.images, seed)
        print(f"seed {seed}: {args.images} test images of {args.data.name}")
        print(table(results))
        gaps = {rule: r["hottest"] - r["coldest"] for rule, r in results.items()}
        explain_gap.append(gaps["explain"])
        baseline_gap.append(gaps["last map"])
        print(
            f"hottest minus coldest: explain {gaps['explain']:.3f}, last map "
            f"{gaps['last map']:.3f}\n"
        )
    print(
        f"median over {args.seeds} seeds, drop(hottest) - drop(coldest): explain "
        f"{np.median(explain_gap):.3f} vs last map {np.median(baseline_gap):.3f} (baseline)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
