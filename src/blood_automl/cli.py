"""The ``blood-automl`` command line: parse options, call one library function, print the result."""

from __future__ import annotations

import sys
from typing import NoReturn

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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`BloodAutoMLError` becomes one line on stderr and exit code 1."""
    try:
        app(args=argv, prog_name="blood-automl", standalone_mode=True)
    except BloodAutoMLError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
