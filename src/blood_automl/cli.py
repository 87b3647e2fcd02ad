"""The ``blood-automl`` command line: parse options, call one library function, print the result."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from blood_automl import __version__
from blood_automl.errors import BloodAutoMLError, ConfigError

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
            "--convert",
            help="Convert grayscale, RGBA and 16-bit images to 8-bit RGB instead of refusing them.",
        ),
    ] = False,
    sheet: Annotated[
        Path | None,
        typer.Option(
            "--sheet",
            help="Write a PNG contact sheet of the removed images, grouped by reason, to this "
            "file (a new file, or an existing regular file with --overwrite).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing --sheet file (a regular file only)."),
    ] = False,
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
    from blood_automl.data.report import check_contact_sheet

    if sheet is not None:
        check_contact_sheet(sheet, overwrite=overwrite)
    report = inspect_data(data, image_size=image_size, clean=not no_clean, convert=convert)
    if sheet is not None:
        write_contact_sheet(report, sheet, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        print_report(report)
        if sheet is not None:
            typer.echo(f"contact sheet of removed images: {sheet}")


STUDY_HELP = "Study name."
STORAGE_HELP = (
    "Optuna storage: an SQLAlchemy URL (postgresql://user:pass@host/db for many machines). "
    "Default: sqlite:///studies/blood-automl.db."
)


FROM_STUDY = "Left out: the study's value when resuming, else"


@app.command("search")
def search_command(
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Training data: an .npz, a MedMNIST .npz, a folder of class folders, or "
            "bloodmnist[:64|128|224]. May be left out when resuming a study.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", help="The study ends with this many finished trials.")
    ] = 100,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop starting trials after this many seconds."),
    ] = None,
    study: Annotated[str, typer.Option("--study", help=STUDY_HELP)] = "blood-automl",
    storage: Annotated[
        str | None, typer.Option("--storage", help=STORAGE_HELP, show_default=False)
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="gpu, cpu or smoke. Default: the study's space when resuming, else gpu when "
            "TensorFlow sees a GPU and cpu otherwise.",
            show_default=False,
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space",
            help="A TOML space file (fixes or narrows a preset); start from the one "
            "`blood-automl space template --preset cpu` prints.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="imagenet (Keras cache), none (from scratch), or a folder of weight files. "
            f"{FROM_STUDY} imagenet.",
            show_default=False,
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size", help=f"Image side in pixels. {FROM_STUDY} 96.", show_default=False
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            "--objective",
            help=f"accuracy, balanced_accuracy or macro_f1 (validation). {FROM_STUDY} accuracy.",
            show_default=False,
        ),
    ] = None,
    recipes: Annotated[
        bool,
        typer.Option(
            "--recipes/--no-recipes", help="Queue the published recipes as the first trials."
        ),
    ] = True,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help=f"Seed of the split, sampler and trials, 0 to 2**32-1. {FROM_STUDY} 0.",
            show_default=False,
        ),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option("--sampler", help=f"tpe, random or gp. {FROM_STUDY} tpe.", show_default=False),
    ] = None,
    pruner: Annotated[
        str | None,
        typer.Option(
            "--pruner",
            help=f"hyperband, median or none. {FROM_STUDY} hyperband.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Worker processes on this machine, at most two per core with 1.5 GiB of "
            "memory each. Default: one per GPU (each gets its own), or one without GPUs.",
            show_default=False,
        ),
    ] = None,
    no_clean: Annotated[
        bool, typer.Option("--no-clean", help="Keep every image (no cleaning).")
    ] = False,
    convert: Annotated[
        bool,
        typer.Option("--convert", help="Convert grayscale, RGBA and 16-bit images to 8-bit RGB."),
    ] = False,
) -> None:
    """Search backbones, heads, augmentation and fine-tuning with an Optuna study.

    Prepares the data once (clean, split, cache), checks that every backbone's weights
    can be had, queues the published recipes, then trains trials until the study has
    --trials finished ones. Running it again resumes the study, with its stored
    settings for the options left out. Ctrl-C stops cleanly; a failing disk, store,
    weights file or data stops it with exit code 1, the running trial not counted.

    \b
    Example:  blood-automl search --data training_set.npz --trials 100
    Example:  blood-automl search --data bloodmnist --preset cpu --trials 20
    Example:  blood-automl search --workers 4 --storage postgresql://user@db/studies
    """
    from rich.console import Console

    from blood_automl.signals import exit_on_stop

    # Importing the search takes a moment: a stop then is one line, exit 130, nothing written.
    with exit_on_stop("search stopped by the user before it started; nothing was written"):
        from blood_automl.search import SearchOptions, SearchStopped, print_summary, run_search

    resumable = {  # left out (None): the study's stored value on resume
        "weights": weights,
        "image_size": image_size,
        "objective": objective,
        "seed": seed,
        "sampler": sampler,
        "pruner": pruner,
    }
    given: dict[str, Any] = {k: v for k, v in resumable.items() if v is not None}
    options = SearchOptions(
        data=data,
        trials=trials,
        timeout=timeout,
        study=study,
        storage=storage,
        preset=preset,
        space=None if space is None else str(space),
        recipes=recipes,
        clean=not no_clean,
        convert=convert,
        workers=workers,
        given=frozenset(given),
        **given,
    )
    console = Console()
    try:
        result = run_search(options, console)
    except SearchStopped as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    print_summary(result, options, console)


TTA_HELP = "Average the probabilities over the 8 rotations and mirror images of each image"


def _scores(m: dict[str, Any]) -> str:
    return (
        f"accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
        f"macro F1 {m['macro_f1']:.4f}"
    )


def _warn(warning: str | None) -> None:
    """A warning (not an error: the exit code stays 0) on stderr."""
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)


def _check_top(top: int | None, trial: int | None) -> None:
    """refit-best's --top: a whole number >= 1, and not together with --trial."""
    if top is not None and top < 1:
        raise ConfigError(f"--top must be >= 1, not {top}; give --top 1 (the best trial) or more")
    if top is not None and trial is not None:
        raise ConfigError(
            f"--top {top} and --trial {trial} cannot go together (--top chooses the trials); "
            "give one of them"
        )


@app.command("refit-best")
def refit_best_command(
    study: Annotated[str, typer.Option("--study", help=STUDY_HELP)] = "blood-automl",
    storage: Annotated[
        str | None, typer.Option("--storage", help=STORAGE_HELP, show_default=False)
    ] = None,
    trial: Annotated[
        int | None,
        typer.Option(
            "--trial", help="Refit this completed trial instead of the best.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Export folder: a new or empty folder. Default: exports/<study>.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier export of blood-automl there (never any other folder).",
        ),
    ] = False,
    no_calibration: Annotated[
        bool,
        typer.Option(
            "--no-calibration",
            help="Skip the temperature calibration (it trains the configuration a second "
            "time, on the train split, to fit the temperature on the validation split).",
        ),
    ] = False,
    tta: Annotated[bool, typer.Option("--tta", help=TTA_HELP + " on the test split too.")] = False,
    no_portable: Annotated[
        bool,
        typer.Option(
            "--no-portable",
            help="Write no model.onnx and model.tflite (their conversion and check take a "
            "few seconds to a minute per model).",
        ),
    ] = False,
    top: Annotated[
        int | None,
        typer.Option(
            "--top",
            help="Refit the K best distinct trials (preferring other backbones among near "
            "equals) and export their soft vote as one model. Default: 1, the best alone.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Retrain the best trial on train + validation, test it once, and export it.

    Writes model.keras (raw uint8 images in, calibrated class probabilities out), a
    SavedModel, model.tflite and model.onnx (checked against model.keras on the test
    split), config.json (params, study, trial, space version, data fingerprint, seed,
    temperature, versions), metrics.json (with test ECE before / after calibration),
    MODEL_CARD.md, classification_report.txt, confusion_matrix.png, training_curves.png,
    reliability_diagram.png, gradcam.png (Grad-CAM heat maps of test images),
    data_summary.json (the training images' colours, which predict and evaluate compare
    with). With --top K the model is the soft vote of K refitted trials.

    \b
    Example:  blood-automl refit-best --study blood-automl
    Example:  blood-automl refit-best --study blood-automl --tta
    Example:  blood-automl refit-best --study blood-automl --top 3
    """
    from blood_automl.export.portable import portable_warnings

    _check_top(top, trial)
    if top is not None and top > 1:
        from blood_automl.export.ensemble_refit import refit_ensemble

        result = refit_ensemble(
            study,
            storage,
            top=top,
            out=out,
            overwrite=overwrite,
            calibrate=not no_calibration,
            tta=tta,
            portable=not no_portable,
        )
        chosen = result.test_metrics["ensemble"]["members"]
        typer.echo(
            f"ensemble of {len(result.members)} (soft vote): "
            + ", ".join(f"trial {r['trial']} ({r['backbone']})" for r in chosen)
        )
    else:
        from blood_automl.export.refit import refit_best

        result = refit_best(
            study,
            storage,
            trial_number=trial,
            out=out,
            overwrite=overwrite,
            calibrate=not no_calibration,
            tta=tta,
            portable=not no_portable,
        )
    m = result.test_metrics
    head = (
        f"ensemble: best member's validation {result.validation_value:.4f}"
        if result.members
        else f"trial {result.trial}: validation {result.validation_value:.4f}"
    )
    typer.echo(
        f"{head}; test {_scores(m)} on {m['n']} images"
        + (f"; with test-time augmentation {_scores(m['tta'])}" if "tta" in m else "")
    )
    cal = result.calibration or {}
    if "temperature" in cal:
        typer.echo(
            f"calibrated: temperature {cal['temperature']:.3f}; test ECE "
            f"{cal['test_ece_before']:.4f} -> {cal['test_ece_after']:.4f}"
        )
        if cal.get("temperature_at_bound"):
            typer.echo(
                "warning: the temperature is at an end of its range: the validation predictions "
                "were near chance (or all sure and right); check the model before any use "
                "(see MODEL_CARD.md)",
                err=True,
            )
    for line in portable_warnings(m):
        _warn(line)
    typer.echo(f"exported to {result.out}")


@app.command("dashboard")
def dashboard_command(
    study: Annotated[
        str | None,
        typer.Option(
            "--study", help="Study whose uploads the dashboard keeps.", show_default=False
        ),
    ] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help=STORAGE_HELP, show_default=False)
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; loopback unless you mean to share it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    quiet: Annotated[bool, typer.Option("--quiet", help="No request log.")] = False,
) -> None:
    """Watch studies in optuna-dashboard, with each trial's curves and confusion matrix.

    \b
    Example:  blood-automl dashboard --port 8080
    """
    from blood_automl.analysis.dashboard import run_dashboard

    run_dashboard(
        storage,
        study,
        host=host,
        port=port,
        quiet=quiet,
        on_ready=lambda url: typer.echo(f"dashboard: {url}  (Ctrl-C to stop)"),
    )


@app.command("report")
def report_command(
    study: Annotated[str, typer.Option("--study", help=STUDY_HELP)] = "blood-automl",
    storage: Annotated[
        str | None, typer.Option("--storage", help=STORAGE_HELP, show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Report folder (index.html and the files beside it): a new or empty folder. "
            "Default: reports/<study>.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier report of blood-automl there (never any other folder).",
        ),
    ] = False,
    top: Annotated[int, typer.Option("--top", help="How many trials the tables list.")] = 10,
) -> None:
    """Write a study's report: top trials, parameter importances, history, learning curves.

    \b
    Example:  blood-automl report --study blood-automl
    """
    from blood_automl.analysis.report import write_report

    result = write_report(storage, study, out, overwrite=overwrite, top=top)
    typer.echo(f"report written to {result.folder}: " + ", ".join(p.name for p in result.files))
    for note in result.notes:
        typer.echo(f"note: {note}")


ExportArgument = Annotated[
    Path,
    typer.Argument(
        help="An export folder of refit-best, or its model.keras, model.tflite or model.onnx.",
        show_default=False,
    ),
]
LabelledDataArgument = Annotated[
    str,
    typer.Argument(
        help="Labelled images: an .npz (images, labels[, class_names]) or a folder of "
        "class folders named as the model's classes.",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
ResizeOption = Annotated[
    bool, typer.Option("--resize", help="Resize images of another size (as training data is).")
]
ConvertImagesOption = Annotated[
    bool, typer.Option("--convert", help="Convert grayscale, RGBA and 16-bit images to 8-bit RGB.")
]


@app.command("predict")
def predict_command(
    model: ExportArgument,
    data: Annotated[
        str,
        typer.Argument(
            help="Images: an .npz (images[, labels]), a folder of images or of class folders, "
            "or one image file.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write (a new file).")] = Path(
        "predictions.csv"
    ),
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing CSV (a regular file only)."),
    ] = False,
    batch_size: BatchSizeOption = 256,
    resize: ResizeOption = False,
    convert: ConvertImagesOption = False,
    tta: Annotated[bool, typer.Option("--tta", help=TTA_HELP + ".")] = False,
) -> None:
    """Predict the class of each image with an exported model; writes a CSV of probabilities.

    Warns (on stderr) when the images' colours lie far from the training images'.

    \b
    Example:  blood-automl predict exports/blood-automl new_images/ --out predictions.csv
    Example:  blood-automl predict exports/blood-automl new_images/ --tta
    """
    from blood_automl.export.predict import predict_images

    result = predict_images(
        model,
        data,
        out=out,
        batch_size=batch_size,
        overwrite=overwrite,
        resize=resize,
        convert=convert,
        tta=tta,
    )
    typer.echo(f"{len(result)} images -> {result.out}")
    typer.echo("predicted: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    if result.accuracy is not None:
        typer.echo(f"accuracy against the given labels: {result.accuracy:.4f}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    _warn(result.warning)


@app.command("evaluate")
def evaluate_command(
    export: ExportArgument,
    data: LabelledDataArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Evaluation folder: a new or empty folder. Default: evaluations/<export name>.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier evaluation of blood-automl there (never any other folder).",
        ),
    ] = False,
    tta: Annotated[bool, typer.Option("--tta", help=TTA_HELP + " as well.")] = False,
    batch_size: BatchSizeOption = 256,
    resize: ResizeOption = False,
    convert: ConvertImagesOption = False,
) -> None:
    """Score an exported model on a labelled data set with refit-best's metrics.

    Writes metrics.json, per_class.csv and confusion_matrix.png, and prints the scores
    and the per-class table. Warns (on stderr) when the images' colours lie far from
    the training images'.

    \b
    Example:  blood-automl evaluate exports/blood-automl other_lab.npz --tta
    """
    from blood_automl.export.evaluate import evaluate_export, per_class_table

    result = evaluate_export(
        export,
        data,
        out=out,
        tta=tta,
        batch_size=batch_size,
        overwrite=overwrite,
        resize=resize,
        convert=convert,
    )
    m = result.metrics
    typer.echo(f"{m['n']} images: {_scores(m)}")
    if "tta" in m:
        typer.echo(f"with test-time augmentation: {_scores(m['tta'])}")
    rows = per_class_table(m)
    width = max(len(r[0]) for r in rows)
    for row in rows:
        typer.echo(f"{row[0]:<{width}}  " + "  ".join(f"{c:>9}" for c in row[1:]))
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"evaluation written to {result.out}")
    _warn(result.warning)


@app.command("explain")
def explain_command(
    export: ExportArgument,
    data: LabelledDataArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Explanation folder: a new or empty folder. Default: explanations/<export name>.",
            show_default=False,
        ),
    ] = None,
    per_class: Annotated[
        int,
        typer.Option(
            "--per-class", help="Right and wrong images shown per true class (each, 1-50)."
        ),
    ] = 4,
    per_image: Annotated[
        bool, typer.Option("--per-image", help="Also one PNG per image, under images/.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier explanation of blood-automl there (never any other folder).",
        ),
    ] = False,
    batch_size: BatchSizeOption = 32,
    resize: ResizeOption = False,
    convert: ConvertImagesOption = False,
) -> None:
    """Show where an exported model looks: Grad-CAM heat maps over labelled images.

    Writes one sheet_<class>.png per true class (its most confident right and wrong
    predictions, each image beside its heat map), explanations.csv (every image: true,
    predicted, probability) and with --per-image one PNG per image. An ensemble's maps
    are the mean of its members' maps.

    \b
    Example:  blood-automl explain exports/blood-automl other_lab.npz --per-class 6
    """
    from blood_automl.export.explanations import check_options

    check_options(per_class, batch_size)
    from blood_automl.export.explanations import explain_export

    result = explain_export(
        export,
        data,
        out=out,
        per_class=per_class,
        per_image=per_image,
        batch_size=batch_size,
        overwrite=overwrite,
        resize=resize,
        convert=convert,
    )
    typer.echo(
        f"{result.images} images (accuracy {result.accuracy:.4f}), {result.explained} explained"
    )
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"explanations written to {result.out}")


space_app = typer.Typer(
    help=(
        "Print a search space as TOML, or write a commented space file to start from.\n\n"
        "Example:  blood-automl space template --preset cpu > myspace.toml"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(space_app, name="space")


@space_app.command("show")
def space_show_command(
    space: Annotated[
        str,
        typer.Argument(
            help="A preset (gpu, cpu, smoke) or the path of a space file.", show_default=False
        ),
    ],
) -> None:
    """Print a preset, or what a space file makes of its base, as a complete space file.

    The output loads back as the same space (same version), so it can be saved and edited.
    A file without base is shown narrowing gpu; a search on a machine where TensorFlow
    sees no GPU narrows cpu instead when the file's values fit it.

    \b
    Example:  blood-automl space show cpu
    Example:  blood-automl space show myspace.toml
    """
    from blood_automl.spaces import load_space
    from blood_automl.spaces.template import space_toml

    loaded = load_space(space)
    typer.echo(f"# space {loaded.name}, version {loaded.version}")
    typer.echo(space_toml(loaded), nl=False)


@space_app.command("template")
def space_template_command(
    preset: Annotated[
        str, typer.Option("--preset", help="The preset to start from: gpu, cpu or smoke.")
    ] = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the file here instead of printing it.", show_default=False
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file.")
    ] = False,
) -> None:
    """Print (or write) a commented space file: a preset with every parameter written out.

    Each parameter comes with what it means, its type and valid values, its default and
    its domain in every preset. Loaded unchanged it is the preset itself; fix, narrow or
    delete the tables you want to change, then pass it to search --space.

    \b
    Example:  blood-automl space template --preset cpu > myspace.toml
    Example:  blood-automl space template --preset gpu --out myspace.toml
    """
    from blood_automl.spaces.template import template_toml, write_space_file

    text = template_toml(preset)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_space_file(out, text, overwrite=overwrite)
    typer.echo(f"space file written to {out}; use it with: blood-automl search --space {out}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`BloodAutoMLError` becomes one line on stderr and exit code 1."""
    try:
        app(args=argv, prog_name="blood-automl", standalone_mode=True)
    except BloodAutoMLError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except SystemExit as exc:
        if exc.code == STOPPED:
            _leave_stopped()
        raise


STOPPED = 130
"""Exit code of a command stopped by SIGINT or SIGTERM."""


def _leave_stopped() -> None:
    """Exit with code 130 now that a stopped command has cleaned up.

    A stop that landed while TensorFlow ran Python code from C (``PyRun_String``) leaves
    the interpreter's "unhandled KeyboardInterrupt" flag set even though the stop was
    handled, and Python would then end the process by SIGINT instead of with code 130.
    Exit handlers still run; only that last step is skipped.
    """
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(STOPPED)
