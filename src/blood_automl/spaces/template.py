"""Spaces as TOML text: a preset printed, a commented template to start from, the README table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blood_automl.errors import ConfigError
from blood_automl.spaces.domains import Choices, Domain, Fixed
from blood_automl.spaces.params import PARAMS, ParamSpec
from blood_automl.spaces.space import PRESETS, Space, load_space

_KIND_WORDS = {"str": "string", "bool": "true / false", "int": "integer", "float": "number"}

_HEADER = """\
# A blood-automl space file: `blood-automl search --space {file} ...`
#
# It starts from the preset named by `base` (gpu, cpu or smoke) and may only fix,
# narrow or drop that preset's values. Each [params.<name>] table takes one form:
#   value = X                     fix the parameter (it is then not searched)
#   choices = [A, B]              search only these (a subset of the base's choices)
#   exclude = [A]                 search the base's choices except these
#   low = L  high = H             search a range within the base's range
#                                 (optional: log = true for a log scale, step = S for a grid)
# A parameter left out keeps the base's domain. Check the file with
#   blood-automl space show {file}
"""


def toml_value(value: Any) -> str:
    """One TOML value: a string, boolean, integer, float or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def _domain_lines(domain: Domain) -> list[str]:
    return [f"{key} = {toml_value(v)}" for key, v in domain.to_dict().items()]


def domain_text(domain: Domain) -> str:
    """A domain in the words of the README: ``= 4``, ``{a, b}``, ``1e-05 - 0.001 log``."""
    if isinstance(domain, Fixed):
        return f"= {toml_value(domain.value)}"
    if isinstance(domain, Choices):
        return ", ".join(toml_value(v) for v in domain.options)
    extra = " (log)" if domain.log else f" (step {domain.step})" if domain.step is not None else ""
    return f"{toml_value(domain.low)} - {toml_value(domain.high)}{extra}"


def _comment(spec: ParamSpec) -> list[str]:
    lines = [
        f"# {spec.name}: {spec.meaning}.",
        f"#   {_KIND_WORDS[spec.kind]}; valid: {spec.limits()}; default {toml_value(spec.default)}"
        f" ({spec.reason}).",
    ]
    if spec.when is not None:
        lines.append(f"#   applies only when {spec.when.text}.")
    ranges = "; ".join(f"{p}: {domain_text(load_space(p)[spec.name])}" for p in PRESETS)
    lines.append(f"#   presets: {ranges}")
    return lines


def space_toml(space: Space, *, base: str | None = None, comments: bool = False) -> str:
    """``space`` as a space file that loads back as the same space.

    ``base`` is the preset the file names (default: the space's own base or name when
    that is a preset); ``comments`` adds what every parameter means and its limits.
    """
    base = base or space.base or (space.name if space.name in PRESETS else "gpu")
    lines: list[str] = []
    if comments:
        lines += [*_HEADER.format(file=f"my-{base}.toml").splitlines(), ""]
    lines += [f"base = {toml_value(base)}", f"name = {toml_value(space.name)}"]
    if space.description:
        lines.append(f"description = {toml_value(space.description)}")
    for spec in PARAMS:
        lines.append("")
        if comments:
            lines += _comment(spec)
        lines.append(f"[params.{spec.name}]")
        lines += _domain_lines(space[spec.name])
    return "\n".join(lines) + "\n"


def template_toml(preset: str) -> str:
    """A commented space file to start from: ``preset`` with every parameter written out."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is not a preset; use one of {', '.join(PRESETS)}")
    space = load_space(preset)
    renamed = Space(f"my-{preset}", space.domains, f"the {preset} preset, to narrow", base=preset)
    return space_toml(renamed, base=preset, comments=True)


def write_space_file(path: Path, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` to ``path``, refusing a folder and, without ``overwrite``, any existing file."""
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give the path of a .toml file to write")
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path} already exists; pass --overwrite or choose another --out")
    if not path.parent.is_dir():
        raise ConfigError(
            f"--out {path}: the folder {path.parent} does not exist; create it or choose another --out"
        )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--out {path}: cannot write it ({exc.strerror or exc}); choose another --out"
        ) from None


def _limits_short(spec: ParamSpec) -> str:
    if len(spec.values) > 8:
        return f"one of {len(spec.values)} names (all listed by `blood-automl space template`)"
    return spec.limits()


def reference_table() -> str:
    """The README's table of every parameter: meaning, type and limits, default, each preset."""
    head = "| parameter | meaning | type, valid values | default | " + " | ".join(PRESETS) + " |"
    rows = [head, "| " + " | ".join(["---"] * (4 + len(PRESETS))) + " |"]
    for spec in PARAMS:
        meaning = spec.meaning + (f" (when {spec.when.text})" if spec.when else "")
        cells = [
            f"`{spec.name}`",
            meaning,
            f"{_KIND_WORDS[spec.kind]}, {_limits_short(spec)}",
            f"`{toml_value(spec.default)}`",
            *(domain_text(load_space(p)[spec.name]) for p in PRESETS),
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
