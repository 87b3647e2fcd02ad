"""What ``blood-automl inspect-data`` shows: a data report as rich tables, JSON and a contact sheet."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from blood_automl.data.clean import warm_up
from blood_automl.data.dataset import SPLIT_NAMES
from blood_automl.data.prepare import ProcessedData, process_dataset
from blood_automl.data.readers import load_dataset
from blood_automl.data.split import DEFAULT_FRACTIONS
from blood_automl.outputs import check_output_file, write_file


@dataclass(frozen=True, eq=False)
class DataReport:
    """A processed data set (read, cleaned, split) and how long that took."""

    processed: ProcessedData
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """One JSON-able object: counts before/after cleaning, removal groups, split counts."""
        p = self.processed
        ds = p.dataset
        return {
            "source": ds.source,
            "format": ds.format,
            "n_input": len(ds),
            "n_kept": p.cleaning.n_kept,
            "image_size": ds.image_size,
            "class_names": list(ds.class_names),
            "class_counts_before": ds.class_counts(),
            "class_counts_after": ds.class_counts(p.cleaning.keep),
            "cleaning": p.cleaned,
            "removed": p.cleaning.to_dicts(),
            "predefined_split": ds.predefined_split is not None,
            "split_sizes": p.split.sizes(),
            "split": p.split_class_counts(),
            "notes": list(ds.notes),
            "split_error": p.split_error,
            "seconds": round(self.seconds, 3),
        }


def inspect_data(
    data: str | Path,
    *,
    image_size: int = 96,
    clean: bool = True,
    convert: bool = False,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    cache_dir: Path | None = None,
) -> DataReport:
    """Read, validate, clean and split ``data`` exactly as a study would, writing nothing.

    Data that a study would refuse only because it cannot be split (a class too small) is
    still reported: the split is empty and ``split_error`` says why.
    """
    start = time.perf_counter()
    if clean:
        warm_up()
    dataset = load_dataset(data, image_size=image_size, convert=convert, cache_dir=cache_dir)
    processed = process_dataset(
        dataset, clean=clean, seed=seed, fractions=fractions, allow_unsplit=True
    )
    return DataReport(processed=processed, seconds=time.perf_counter() - start)


def print_report(report: DataReport, console: Any = None) -> None:
    """Print the report as rich tables (to ``console``, a ``rich.console.Console``)."""
    from rich.console import Console
    from rich.table import Table

    console = console if console is not None else Console()
    info = report.to_json()
    p = report.processed
    names = info["class_names"]
    size = info["image_size"]
    console.print(
        f"[bold]{info['source']}[/bold]  format {info['format']}, {info['n_input']} images "
        f"{size}x{size} RGB, {len(names)} classes; kept {info['n_kept']} "
        f"({'cleaning on' if info['cleaning'] else 'cleaning off'}), {report.seconds:.1f} s"
    )
    for note in info["notes"]:
        console.print(f"  note: {note}", markup=False, soft_wrap=True)

    counts = Table(title="Images per class")
    counts.add_column("class")
    for col in ("before", "removed", "after", *SPLIT_NAMES):
        counts.add_column(col, justify="right")
    unsplit = info["split_error"] is not None
    for name in names:
        before, after = info["class_counts_before"][name], info["class_counts_after"][name]
        counts.add_row(
            name,
            str(before),
            str(before - after),
            str(after),
            *("-" if unsplit else str(info["split"][s][name]) for s in SPLIT_NAMES),
        )
    totals = [info["n_input"], info["n_input"] - info["n_kept"], info["n_kept"]]
    counts.add_row(
        "total",
        *(str(t) for t in totals),
        *("-" if unsplit else str(info["split_sizes"][s]) for s in SPLIT_NAMES),
    )
    console.print(counts)

    if not info["cleaning"]:
        console.print("Cleaning is off (--no-clean): nothing removed.")
    elif not p.cleaning.groups:
        console.print("Cleaning removed nothing.")
    else:
        removed = Table(title="Removed by cleaning")
        removed.add_column("reason")
        removed.add_column("count", justify="right")
        removed.add_column("first indices")
        for g in p.cleaning.groups:
            shown = ", ".join(str(i) for i in g.indices[:6]) + (", ..." if g.count > 6 else "")
            removed.add_row(g.reason, str(g.count), shown)
        console.print(removed)
    if unsplit:
        console.print(
            f"warning: a study cannot use this data as it is: {info['split_error']}",
            markup=False,
            soft_wrap=True,
        )
        return
    split_note = "the data set's own split" if info["predefined_split"] else "stratified, seeded"
    console.print(
        "Split ("
        + split_note
        + "): "
        + ", ".join(f"{s} {info['split_sizes'][s]}" for s in SPLIT_NAMES)
    )


def check_contact_sheet(path: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse a ``--sheet`` target that may not be written (before the data is read)."""
    return check_output_file(path, overwrite=overwrite, option="--sheet", example="removed.png")


def write_contact_sheet(
    report: DataReport,
    path: Path,
    *,
    overwrite: bool = False,
    per_group: int = 40,
    thumb: int = 80,
    columns: int = 10,
) -> Path:
    """Write a PNG of the removed images, one titled block per removal group, and return its path.

    Each block shows up to ``per_group`` images (a repeated picture only its first row of
    copies), each captioned with its input index and class. ``path`` follows the rules of
    :mod:`blood_automl.outputs`: a new file, or an existing regular file with ``overwrite``.
    """
    check_contact_sheet(path, overwrite=overwrite)
    p = report.processed
    images, labels, names = p.dataset.images, p.dataset.labels, p.dataset.class_names
    cell_h = thumb + 14
    title_h = 18
    blocks: list[tuple[str, Sequence[int]]] = [
        (
            f"{g.reason} - {g.count} image{'s' if g.count != 1 else ''}",
            g.indices[
                : columns if g.kind == "repeated" else per_group
            ],  # copies: one row is enough
        )
        for g in p.cleaning.groups
    ]
    if not blocks:
        blocks = [("nothing was removed", [])]
    height = 8 + sum(title_h + -(-len(idx) // columns) * cell_h + 8 for _, idx in blocks)
    width = max(columns * (thumb + 4) + 8, 480)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 8
    for title, idx in blocks:
        draw.text((6, y), title[: width // 6], fill=(0, 0, 0))
        y += title_h
        for k, i in enumerate(idx):
            x0 = 6 + (k % columns) * (thumb + 4)
            y0 = y + (k // columns) * cell_h
            tile = Image.fromarray(np.ascontiguousarray(images[i])).resize(
                (thumb, thumb), Image.Resampling.LANCZOS
            )
            sheet.paste(tile, (x0, y0))
            draw.rectangle([x0 - 1, y0 - 1, x0 + thumb, y0 + thumb], outline=(170, 170, 170))
            draw.text((x0, y0 + thumb), f"{i} {names[int(labels[i])][:6]}", fill=(60, 60, 60))
        y += -(-len(idx) // columns) * cell_h + 8
    return write_file(
        path,
        lambda f: sheet.save(f, format="PNG"),
        overwrite=overwrite,
        binary=True,
        option="--sheet",
        example="removed.png",
    )
