"""MODEL_CARD.md of an export: what the model classifies, its data, search, metrics, limits, use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SPLIT_LABELS = {"train": "train", "val": "validation", "test": "test"}


def manifest_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the card says of the data, from a prepared-data manifest (missing keys left out)."""
    removed = manifest.get("removed") or []
    summary: dict[str, Any] = {
        "source": manifest.get("source"),
        "images_in": manifest.get("n_input"),
        "images_kept": manifest.get("n_kept"),
        "cleaning": manifest.get("cleaning"),
        "removed": [
            {"reason": str(g.get("reason")), "count": int(g.get("count", 0))}
            for g in removed
            if isinstance(g, Mapping)
        ],
        "class_counts": manifest.get("split"),
    }
    return {k: v for k, v in summary.items() if v is not None}


def _f(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _what(config: Mapping[str, Any]) -> list[str]:
    names = list(config.get("class_names", []))
    size = config.get("image_size")
    return [
        "## What it classifies",
        "",
        f"Microscope images of single blood cells ({size}x{size} RGB) into {len(names)} "
        f"classes: {', '.join(f'`{n}`' for n in names)}.",
    ]


def _data(config: Mapping[str, Any]) -> list[str]:
    trained = config.get("trained_on", {})
    data = config.get("data", {})
    names = list(config.get("class_names", []))
    lines = ["## Data", ""]
    counts = data.get("class_counts")
    if isinstance(counts, Mapping) and all(
        isinstance(counts.get(s), Mapping) for s in SPLIT_LABELS
    ):
        rows = [[n, *(counts[s].get(n, 0) for s in SPLIT_LABELS)] for n in names]
        rows.append(["**all**", *(sum(counts[s].values()) for s in SPLIT_LABELS)])
        lines += _table(["class", *SPLIT_LABELS.values()], rows)
    else:
        sizes = [trained.get("train"), trained.get("validation"), config.get("tested_on")]
        lines += _table(list(SPLIT_LABELS.values()), [sizes])
    lines += ["", f"- Data fingerprint: `{config.get('data_fingerprint')}`"]
    if data.get("source"):
        lines.append(f"- Source: `{data['source']}`")
    if data.get("cleaning") is True:
        removed = ", ".join(f"{g['count']} {g['reason']}" for g in data.get("removed", []))
        lines.append(
            f"- Cleaning: {data.get('images_kept')} of {data.get('images_in')} images kept"
            + (f" (removed: {removed})" if removed else "")
        )
    elif data.get("cleaning") is False:
        lines.append("- Cleaning: off (every input image kept)")
    lines.append(
        "- The final model is trained on train + validation; the test split is used once, "
        "to measure it."
    )
    return lines


def _search(config: Mapping[str, Any]) -> list[str]:
    validation = config.get("validation", {})
    finished = config.get("finished_trials")
    of = f" of {finished} finished trials" if finished is not None else ""
    epochs = config.get("epochs", {})
    params = config.get("params", {})
    lines = [
        "## Search and chosen configuration",
        "",
        f"- Study `{config.get('study')}`, trial {config.get('trial')}{of}; search space "
        f"`{config.get('space_name')}` version {config.get('space_version')}.",
        f"- Validation {validation.get('objective')} of the trial: {_f(validation.get('value'))}.",
        f"- Weights: {config.get('weights')}; seed {config.get('seed')}; epochs: head "
        f"{epochs.get('head')}, fine-tune {epochs.get('finetune')}.",
        "",
    ]
    lines += _table(["parameter", "value"], [[k, f"`{params[k]}`"] for k in sorted(params)])
    return lines


def _ensemble(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """The members of an ensemble (``refit-best --top K``), how they were chosen, how k did."""
    members = config.get("members")
    if not isinstance(members, list):
        return []
    entry = metrics.get("ensemble", {})
    by_trial = {r.get("trial"): r for r in entry.get("members", [])}
    lines = [
        "## Ensemble",
        "",
        f"This model is the soft vote (mean of the class probabilities) of {len(members)} "
        "models, each retrained on train + validation with its own trial's configuration, "
        "epochs and seed. The search and configuration above are those of the first member. "
        f"Members chosen by: {config.get('ensemble', {}).get('choice')}.",
        "",
    ]
    rows = [
        [
            i,
            m.get("trial"),
            f"`{m.get('backbone')}`",
            _f(m.get("validation_value")),
            _f(by_trial.get(m.get("trial"), {}).get("test", {}).get("accuracy")),
            _f(by_trial.get(m.get("trial"), {}).get("test", {}).get("macro_f1")),
        ]
        for i, m in enumerate(members)
    ]
    header = ["member", "trial", "backbone", "validation objective", "test accuracy", "test F1"]
    lines += _table(header, rows)
    by_k = entry.get("validation_by_k")
    if isinstance(by_k, list):
        lines += [
            "",
            "Validation split, soft vote of the first k members trained on train only:",
            "",
        ]
        lines += _table(
            ["k", "accuracy", "balanced accuracy", "macro F1", "NLL"],
            [
                [
                    r.get("k"),
                    *(_f(r.get(s)) for s in ("accuracy", "balanced_accuracy", "macro_f1", "nll")),
                ]
                for r in by_k
            ],
        )
    elif entry.get("validation_by_k_absent"):
        lines += ["", f"No validation figures per k: {entry['validation_by_k_absent']}."]
    return lines


def _metrics(metrics: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Test metrics",
        "",
        f"On {metrics.get('n')} test images: accuracy {_f(metrics.get('accuracy'))}, balanced "
        f"accuracy {_f(metrics.get('balanced_accuracy'))}, macro F1 {_f(metrics.get('macro_f1'))}.",
        "",
    ]
    per_class = metrics.get("per_class", {})
    rows = [
        [name, _f(m.get("precision")), _f(m.get("recall")), _f(m.get("f1")), m.get("support")]
        for name, m in per_class.items()
    ]
    lines += _table(["class", "precision", "recall", "F1", "support"], rows)
    return lines


def _calibration(metrics: Mapping[str, Any]) -> list[str]:
    cal = metrics.get("calibration")
    lines = ["## Calibration", ""]
    if not isinstance(cal, Mapping):
        return [*lines, "Not measured."]
    bins = cal.get("bins")
    if cal.get("method") != "temperature":
        return [
            *lines,
            "Not calibrated (exported with `--no-calibration`): the probabilities are the "
            f"network's softmax. Test expected calibration error ({bins} bins): "
            f"{_f(cal.get('test_ece_before'))}; see `reliability_diagram.png`.",
        ]
    return [
        *lines,
        f"The probabilities are temperature-scaled: the logits are divided by T = "
        f"{_f(cal.get('temperature'))} inside the model. T was fitted on the validation split "
        "as predicted by the same configuration trained on the train split only (so T is "
        "fitted on images its model never trained on), by minimising the negative log-likelihood "
        f"({_f(cal.get('validation_nll_before'))} -> {_f(cal.get('validation_nll_after'))}). "
        "A temperature does not change the predicted class, so accuracy is unchanged.",
        *_bound_warning(cal),
        "",
        f"Test expected calibration error ({bins} equal-width bins): "
        f"{_f(cal.get('test_ece_before'))} before, {_f(cal.get('test_ece_after'))} after; "
        "see `reliability_diagram.png`.",
    ]


def _bound_warning(cal: Mapping[str, Any]) -> list[str]:
    if not cal.get("temperature_at_bound"):
        return []
    return [
        "",
        "**T is at an end of its search interval (0.01 to 100)**: the validation predictions "
        "were near chance (or all right and sure), so the calibrated probabilities are close "
        "to uniform (or to 0 and 1); check the model before any use.",
    ]


def _limits() -> list[str]:
    return [
        "## Intended use and limits",
        "",
        "- For research and for sorting or reviewing blood-cell images, with a person checking "
        "the results. It is **not a diagnostic device** and must not decide anything about a "
        "patient.",
        "- It was trained on one laboratory's images: one stain, one microscope and scanner, "
        "one way of cropping cells. Other stains, scanners, magnifications or crops can lower "
        "its accuracy a lot while its confidence stays high. **Check it on your own labelled images "
        "first** (`blood-automl evaluate <this folder> <labelled images>` scores it and warns when "
        "their colours differ from the training images').",
        "- It knows only the classes above: any other cell, artefact or image gets one of them.",
        "- `gradcam.png` shows where it looked on some right and wrong test images (Grad-CAM); "
        "`blood-automl explain <this folder> <labelled images>` draws the same for your images.",
        "- Its confidence was measured (and calibrated) on this data set; on other data it can "
        "be over- or under-confident.",
    ]


def _loading(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    size = config.get("image_size")
    return [
        "## How to load it",
        "",
        "```python",
        "import keras",
        "",
        'model = keras.saving.load_model("model.keras")  # Keras safe mode, no custom code',
        f"# images: uint8 RGB, shape (N, {size}, {size}, 3); preprocessing is inside the model",
        "probabilities = model.predict(images)  # (N, classes), in the order of config.json",
        "```",
        "",
        "Or: `blood-automl predict <this folder> <images>`. `saved_model/` is the same model "
        "for TensorFlow Serving.",
        *_portable(metrics),
    ]


def _portable(metrics: Mapping[str, Any]) -> list[str]:
    """One line per portable file: kept and how well it agrees, or why it is missing."""
    found = metrics.get("portable")
    if not isinstance(found, Mapping):
        return []
    lines = ["", "Portable files, checked against model.keras after writing:", ""]
    for key, label in (("onnx", "ONNX (onnxruntime)"), ("litert", "LiteRT (ai-edge-litert)")):
        entry = found.get(key)
        if not isinstance(entry, Mapping):
            continue
        if entry.get("status") == "ok":
            checked = entry.get("checked_on", {})
            lines.append(
                f"- `{entry.get('file')}`, {label}: same class on "
                f"{float(entry.get('agreement', 0.0)):.2%} of {checked.get('images')} "
                f"{checked.get('source')} images, probabilities within "
                f"{float(entry.get('max_abs_diff', 0.0)):.1e}; "
                f"`blood-automl predict {entry.get('file')} <images>` runs it"
            )
        else:
            lines.append(f"- {label}: {entry.get('warning', entry.get('status'))}")
    return lines


def model_card(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """The Markdown text of MODEL_CARD.md from an export's config.json and metrics.json."""
    study, trial = config.get("study"), config.get("trial")
    title = f"# Model card: blood-cell classifier (study `{study}`, trial {trial})"
    if isinstance(config.get("members"), list):
        numbers = ", ".join(str(m.get("trial")) for m in config["members"])
        title = (
            f"# Model card: blood-cell classifier (study `{study}`, ensemble of trials {numbers})"
        )
    sections = [
        _what(config),
        _data(config),
        _search(config),
        _ensemble(config, metrics),
        _metrics(metrics),
        _calibration(metrics),
        _limits(),
        _loading(config, metrics),
    ]
    lines = [title, "", f"Exported {config.get('created')}.", ""]
    for section in sections:
        if section:
            lines += [*section, ""]
    return "\n".join(lines)
