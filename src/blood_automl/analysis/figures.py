"""PNG figures for people: confusion matrix and learning curves (matplotlib, no display needed)."""

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
