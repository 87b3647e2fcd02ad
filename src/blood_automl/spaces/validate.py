"""Checking space data (TOML or stored JSON) and turning it into domains, with one-line errors."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from blood_automl.errors import ConfigError
from blood_automl.spaces.domains import Choices, Domain, Fixed, Range
from blood_automl.spaces.params import PARAM_NAMES, PARAM_SPECS, ParamSpec

_FORMS = "value = ..., choices = [...], exclude = [...] or low = ... with high = ..."
_ENTRY_KEYS = ("value", "choices", "exclude", "low", "high", "log", "step")
_RANGE_KEYS = ("low", "high", "log", "step")


def fail(source: str, key: str, problem: str, fix: str) -> NoReturn:
    """Raise the one-line :class:`ConfigError` ``<source>: <key> <problem>; <fix>``."""
    raise ConfigError(f"{source}: {key} {problem}; {fix}")


def show(value: Any, limit: int = 60) -> str:
    """A value as short, single-line TOML-like text (strings quoted and escaped)."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, known: tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for a close match of ``word`` in ``known``, else ``""``."""
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_params(
    raw: Any,
    source: str,
    base: Mapping[str, Domain] | None = None,
    base_name: str = "",
) -> dict[str, Domain]:
    """Check a ``params`` table; with a base, entries may only fix or narrow the base's domains.

    Without a base every parameter must be given (a preset or a stored space is complete).
    """
    if not isinstance(raw, dict):
        fail(
            source,
            "params",
            f"= {show(raw)} is not a table",
            f"write one [params.<name>] table per parameter with {_FORMS}",
        )
    for name in raw:
        if name not in PARAM_SPECS:
            fail(
                source,
                f"params.{name}",
                f"is not a known parameter{did_you_mean(name, PARAM_NAMES)}",
                f"use one of: {', '.join(PARAM_NAMES)}",
            )
    out: dict[str, Domain] = {}
    for name in PARAM_NAMES:
        inherited = base.get(name) if base is not None else None
        if name in raw:
            out[name] = parse_entry(PARAM_SPECS[name], raw[name], source, inherited, base_name)
        elif inherited is not None:
            out[name] = inherited
        else:
            fail(
                source,
                f"params.{name}",
                "is missing",
                f"add [params.{name}] with {_FORMS} (a complete space defines every parameter)",
            )
    return out


def parse_entry(
    spec: ParamSpec, entry: Any, source: str, base: Domain | None = None, base_name: str = ""
) -> Domain:
    """Check one ``[params.<name>]`` table and return its domain (narrowed from ``base``)."""
    key = f"params.{spec.name}"
    if not isinstance(entry, dict):
        fail(source, key, f"= {show(entry)} is not a table", f"write [{key}] then one of {_FORMS}")
    for k in entry:
        if k not in _ENTRY_KEYS:
            fail(
                source,
                f"{key}.{k}",
                f"is not a known key{did_you_mean(k, _ENTRY_KEYS)}",
                "use value, choices, exclude, or low, high, log, step",
            )
    forms = [f for f in ("value", "choices", "exclude") if f in entry]
    if any(k in entry for k in _RANGE_KEYS):
        forms.append("low/high")
    if len(forms) != 1:
        problem = "gives " + " and ".join(forms) if forms else "is empty"
        fail(source, key, problem, f"give exactly one of {_FORMS}")
    if "value" in entry:
        domain: Domain = Fixed(_check(spec, entry["value"], source, f"{key}.value"))
    elif "choices" in entry:
        domain = Choices(_check_list(spec, entry["choices"], source, f"{key}.choices"))
    elif "exclude" in entry:
        domain = _exclude(spec, entry["exclude"], source, key, base, base_name)
    else:
        domain = _range(spec, entry, source, key, base)
    return domain if base is None else _narrow(spec, domain, base, source, key, base_name)


def _check(spec: ParamSpec, value: Any, source: str, key: str) -> Any:
    problem = spec.problem(value)
    if problem is not None:
        if spec.name == "backbone" and isinstance(value, str):
            problem = "is not a backbone of the registry usable at 96x96"
        fix = {
            "bool": "write true or false",
            "str": f"choose one of {spec.limits()}",
            "int": f"use an integer in {spec.limits()}, e.g. {show(spec.default)}",
            "float": f"use a number in {spec.limits()}, e.g. {show(spec.default)}",
        }[spec.kind]
        fail(source, key, f"= {show(value)} {problem}", fix)
    return float(value) if spec.kind == "float" else value


def _check_list(spec: ParamSpec, values: Any, source: str, key: str) -> tuple[Any, ...]:
    if not isinstance(values, list):
        fail(
            source,
            key,
            f"= {show(values)} is not a list",
            f"write {key.rsplit('.', 1)[-1]} = [...]",
        )
    if not values:
        fail(source, key, "is empty", "list at least one value, or drop the key to keep the base's")
    checked = tuple(_check(spec, v, source, f"{key}[{i}]") for i, v in enumerate(values))
    for i, v in enumerate(checked):
        if v in checked[:i]:
            fail(source, f"{key}[{i}]", f"= {show(v)} is listed twice", "list each value once")
    return checked


def _exclude(
    spec: ParamSpec, values: Any, source: str, key: str, base: Domain | None, base_name: str
) -> Choices:
    if not isinstance(base, Choices):
        fail(
            source,
            f"{key}.exclude",
            "needs a base space that gives choices for it",
            "list the values to keep with choices = [...] instead",
        )
    dropped = _check_list(spec, values, source, f"{key}.exclude")
    for i, v in enumerate(dropped):
        if not base.contains(v):
            fail(
                source,
                f"{key}.exclude[{i}]",
                f"= {show(v)} is not among the choices of base {base_name!r}",
                f"exclude only some of {show(list(base.options), 200)}",
            )
    kept = tuple(o for o in base.options if o not in dropped)
    if not kept:
        fail(
            source,
            f"{key}.exclude",
            "drops every choice (an empty range)",
            "keep at least one choice",
        )
    return Choices(kept)


def _range(
    spec: ParamSpec, entry: dict[str, Any], source: str, key: str, base: Domain | None
) -> Range:
    if spec.kind not in ("int", "float"):
        fail(
            source,
            key,
            f"is a {spec.kind} parameter and cannot take low/high",
            "give value = ... or choices = [...]",
        )
    for end in ("low", "high"):
        if end not in entry:
            fail(source, key, f"has no {end}", "a range needs both low = ... and high = ...")
    low = _check(spec, entry["low"], source, f"{key}.low")
    high = _check(spec, entry["high"], source, f"{key}.high")
    if low > high:
        fail(
            source,
            key,
            f"is an empty range: low = {show(low)} > high = {show(high)}",
            "make low <= high",
        )
    inherit = isinstance(base, Range) and "log" not in entry and "step" not in entry
    log = entry.get("log", base.log if inherit and isinstance(base, Range) else False)
    if not isinstance(log, bool):
        fail(
            source,
            f"{key}.log",
            f"= {show(log)} must be true or false",
            "write log = true or log = false",
        )
    step = entry.get("step", base.step if inherit and isinstance(base, Range) else None)
    if log and low <= 0:
        fail(
            source,
            f"{key}.low",
            f"= {show(low)} must be above 0 on a log scale",
            "raise low or set log = false",
        )
    if step is not None:
        step = _check_step(spec, step, low, high, log, source, f"{key}.step")
    return Range(low, high, log, step)


def _check_step(
    spec: ParamSpec, step: Any, low: float, high: float, log: bool, source: str, key: str
) -> int | float | None:
    numeric = isinstance(step, int | float) and not isinstance(step, bool)
    if not numeric or (spec.kind == "int" and not isinstance(step, int)):
        fail(
            source,
            key,
            f"= {show(step)} must be a positive {'integer' if spec.kind == 'int' else 'number'}",
            "write e.g. step = 1" if spec.kind == "int" else "write e.g. step = 0.05",
        )
    if not math.isfinite(step) or step <= 0:
        fail(source, key, f"= {show(step)} must be positive", "use a step above 0")
    if log:
        if spec.kind == "int" and step == 1:
            return None
        fail(source, key, "cannot be combined with log = true", "drop step or set log = false")
    if spec.kind == "int":
        ok = (high - low) % step == 0
    else:
        k = (high - low) / step
        ok = abs(k - round(k)) < 1e-8
    if not ok:
        fail(
            source,
            key,
            f"= {show(step)} does not divide high - low = {show(high - low)}",
            "choose low, high and step so that (high - low) / step is a whole number",
        )
    return (
        None
        if spec.kind == "int" and step == 1
        else (float(step) if spec.kind == "float" else step)
    )


def _narrow(
    spec: ParamSpec, new: Domain, base: Domain, source: str, key: str, base_name: str
) -> Domain:
    """``new`` if it only fixes or narrows ``base``; an error naming the base's domain otherwise."""
    where = f"base {base_name!r}"
    hint = "" if base_name == "gpu" else ' (or use base = "gpu", the full space)'
    if isinstance(base, Fixed):
        if isinstance(new, Fixed) and base.contains(new.value):
            return base
        fail(
            source,
            key,
            f"is fixed to {show(base.value)} in {where}",
            f"leave it out or write value = {show(base.value)}{hint}",
        )
    if isinstance(base, Choices):
        if isinstance(new, Range):
            fail(
                source,
                key,
                f"is a range but {where} gives choices {show(list(base.options), 200)}",
                "narrow it with choices = [...] or value = ...",
            )
        allowed: tuple[Any, ...] = (new.value,) if isinstance(new, Fixed) else new.options
        for v in allowed:
            if not base.contains(v):
                fail(
                    source,
                    key,
                    f"allows {show(v)}, which {where} does not",
                    f"pick from {show(list(base.options), 200)}{hint}",
                )
        if isinstance(new, Choices):
            return Choices(tuple(o for o in base.options if new.contains(o)))
        return new
    values = (
        (new.value,)
        if isinstance(new, Fixed)
        else new.options
        if isinstance(new, Choices)
        else (new.low, new.high)
    )
    for v in values:
        if not base.low <= v <= base.high:
            fail(
                source,
                key,
                f"allows {show(v)}, outside [{show(base.low)}, {show(base.high)}] of {where}",
                f"keep within [{show(base.low)}, {show(base.high)}]{hint}",
            )
    return new
