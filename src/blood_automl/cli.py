"""The ``blood-automl`` command line: parse options, call one library function, print the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from blood_automl import __version__
from blood_automl.errors import BloodAutoMLError

app = typer.Typer(
    name="blood-automl",
    help=(
        "Automatic, reproducible model search for blood-cell image classification.\n\n"
        "Example:  blood-automl inspect-data training_set.npz"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str) -> NoReturn:
    """Print one error line to stderr and exit with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"blood-automl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Automatic, reproducible model search for blood-cell image classification."""


# Commands: one function each, in the order of a user's work.


@app.command("inspect-data")
def inspect_data_command(
    data: Annotated[
        str,
        typer.Argument(
            help="An .npz (images, labels[, class_names]), a MedMNIST .npz, a folder of class "
            "folders, or bloodmnist[:64|128|224].",
            show_default=False,
        ),
    ],
    image_size: Annotated[
        int, typer.Option("--image-size", help="Side in pixels images are resized to.")
    ] = 96,
    no_clean: Annotated[
        bool, typer.Option("--no-clean", help="Keep every image (no cleaning).")
    ] = False,
    convert: Annotated[
        bool,
        typer.Option(
            "--convert", help="Convert grayscale or RGBA images to RGB instead of refusing them."
        ),
    ] = False,
    sheet: Annotated[
        Path | None,
        typer.Option(
            "--sheet",
            help="Write a PNG contact sheet of the removed images, grouped by reason.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
) -> None:
    """Read, check, clean and split a data set as a study would, and report it; writes nothing.

    Shows the source and format, image count and size, class counts before and after
    cleaning, every removal group (reason, count) and the split sizes per class.

    \b
    Example:  blood-automl inspect-data training_set.npz --sheet removed.png
    """
    from blood_automl.data import inspect_data, print_report, write_contact_sheet

    report = inspect_data(data, image_size=image_size, clean=not no_clean, convert=convert)
    if sheet is not None:
        write_contact_sheet(report, sheet)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        print_report(report)
        if sheet is not None:
            typer.echo(f"contact sheet of removed images: {sheet}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`BloodAutoMLError` becomes one line on stderr and exit code 1."""
    try:
        app(args=argv, prog_name="blood-automl", standalone_mode=True)
    except BloodAutoMLError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
