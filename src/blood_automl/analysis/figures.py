"""PNG figures for people: confusion matrix, learning curves, reliability diagram (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(matrix, dtype=float)
    row_sums = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row_sums, out=np.zeros_like(cm), where=row_sums > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n), dpi=100)
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def curves_png(history: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Write loss and accuracy per epoch over both phases, with the phase boundary marked."""
    plt = _pyplot()
    steps = [row["step"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, keys in ((ax_loss, ("loss", "val_loss")), (ax_acc, ("accuracy", "val_accuracy"))):
        for key in keys:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(steps, values, marker="o", label=key.replace("_", " "))
        ax.set_xlabel("epoch (both phases)")
        ax.grid(alpha=0.3)
        ax.legend()
    head = [row["step"] for row in history if row.get("phase") == "head"]
    if head and len(head) < len(history):
        for ax in (ax_loss, ax_acc):
            ax.axvline(max(head) + 0.5, color="grey", linestyle="--", linewidth=1)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_png(
    curves: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, title: str
) -> Path:
    """Write a reliability diagram: accuracy against mean confidence per confidence bin.

    ``curves`` are ``(label, bins)`` pairs, each bin a dict with ``lo``, ``hi``, ``count``,
    ``confidence`` and ``accuracy`` (empty bins are not drawn); the diagonal is perfect
    calibration. A lower panel shows how many images fall in each bin.
    """
    plt = _pyplot()
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5.2, 6.0), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / max(len(curves[0][1]), 1) if curves else 0.0
    for k, (label, bins) in enumerate(curves):
        full = [b for b in bins if int(b["count"]) > 0]
        ax.plot(
            [b["confidence"] for b in full],
            [b["accuracy"] for b in full],
            marker="o",
            label=label,
        )
        share = width / max(len(curves), 1)
        ax_count.bar(
            [float(b["lo"]) + share * (k + 0.5) for b in bins],
            [int(b["count"]) for b in bins],
            width=share,
            label=label,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax_count.set_xlabel("confidence (largest class probability)")
    ax_count.set_ylabel("images")
    ax_count.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
