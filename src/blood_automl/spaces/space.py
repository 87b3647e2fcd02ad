"""The Space type: a validated, immutable search space loaded from a preset or a user's TOML file."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from blood_automl.errors import ConfigError
from blood_automl.spaces.domains import Domain, Fixed, Range, can_meet, domain_values
from blood_automl.spaces.params import PARAM_NAMES, PARAM_SPECS
from blood_automl.spaces.validate import fail, parse_params, show

#: Bumped when the meaning of a space's content changes in code (parameters, their
#: conditions or how values become a TrialConfig); part of every space version.
SCHEMA_VERSION = 1
#: The shipped presets, in the order a user would consider them.
PRESETS: tuple[str, ...] = ("gpu", "cpu", "smoke")
#: The preset a search uses when none is given.
DEFAULT_PRESET = "gpu"

_TOP_KEYS = ("base", "name", "description", "params")


@dataclass(frozen=True)
class Space:
    """A search space: one domain per parameter, in :data:`PARAM_NAMES` order.

    Build it with :func:`load_space` or :meth:`Space.from_dict`, which validate;
    ``version`` changes whenever the domains do.
    """

    name: str
    domains: tuple[tuple[str, Domain], ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = tuple(name for name, _ in self.domains)
        if names != PARAM_NAMES:
            raise ConfigError(
                f"space {self.name!r} must define exactly the parameters {PARAM_NAMES} in order, got {names}"
            )

    def __getitem__(self, name: str) -> Domain:
        """The domain of parameter ``name``."""
        for key, domain in self.domains:
            if key == name:
                return domain
        raise KeyError(name)

    @property
    def params(self) -> dict[str, Domain]:
        """Parameter name -> domain (a new dict)."""
        return dict(self.domains)

    @property
    def version(self) -> str:
        """``<schema>-<8 hex digits>``: the schema version and a hash of the normalised domains."""
        text = json.dumps(self._params_dict(), sort_keys=True, separators=(",", ":"))
        return f"{SCHEMA_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    @property
    def backbones(self) -> tuple[str, ...]:
        """The backbones this space can choose (for checking weight files before a search)."""
        values = domain_values(self["backbone"])
        assert values is not None
        return tuple(values)

    def fixed(self) -> dict[str, Any]:
        """The parameters this space fixes (applied, never suggested), with their values."""
        return {name: d.value for name, d in self.domains if isinstance(d, Fixed)}

    def searched(self) -> frozenset[str]:
        """The names of the parameters ``suggest`` can put in ``trial.params`` for this space.

        A parameter is searched when it is not fixed and its condition can hold, e.g.
        ``focal_gamma`` is not searched when the space fixes ``loss = "crossentropy"``.
        """
        reachable: dict[str, bool] = {}
        for name in PARAM_NAMES:
            when = PARAM_SPECS[name].when
            reachable[name] = when is None or (
                reachable[when.parent] and can_meet(when, self[when.parent])
            )
        return frozenset(n for n, d in self.domains if reachable[n] and not isinstance(d, Fixed))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for a study's user attributes); see :meth:`from_dict`."""
        return {
            "schema": SCHEMA_VERSION,
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "params": self._params_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<stored space>") -> Space:
        """Rebuild, and validate, a space written by :meth:`to_dict`."""
        if not isinstance(data, dict):
            fail(
                source,
                "space",
                f"= {show(data)} is not a dict",
                "pass the dict Space.to_dict() returned",
            )
        unknown = sorted(set(data) - {"schema", "version", "name", "description", "params"})
        if unknown:
            fail(
                source,
                unknown[0],
                "is not a key of a stored space",
                "pass the dict Space.to_dict() returned",
            )
        if data.get("schema") != SCHEMA_VERSION:
            fail(
                source,
                "schema",
                f"= {show(data.get('schema'))} is not this code's space schema {SCHEMA_VERSION}",
                "use the blood-automl version that made the study",
            )
        name, description = (
            _text(data, "name", source, "space"),
            _text(data, "description", source, ""),
        )
        space = cls(name, tuple(parse_params(data.get("params"), source).items()), description)
        if "version" in data and data["version"] != space.version:
            fail(
                source,
                "version",
                f"= {show(data['version'])} does not match the content (version {space.version})",
                "the stored space was edited or made by other code; store it again with Space.to_dict()",
            )
        return space

    def describe(self) -> str:
        """A human-readable table: one line per parameter with its domain."""
        lines = [
            f"space {self.name!r} version {self.version}"
            + (f": {self.description}" if self.description else "")
        ]
        for name, domain in self.domains:
            when = PARAM_SPECS[name].when
            cond = f"  (when {when.text})" if when is not None else ""
            lines.append(f"  {name:<22} {_domain_text(domain)}{cond}")
        return "\n".join(lines)

    def _params_dict(self) -> dict[str, Any]:
        return {name: domain.to_dict() for name, domain in self.domains}


def _domain_text(domain: Domain) -> str:
    if isinstance(domain, Fixed):
        return f"= {show(domain.value)}"
    if isinstance(domain, Range):
        extra = (
            " log"
            if domain.log
            else f" step {show(domain.step)}"
            if domain.step is not None
            else ""
        )
        return f"[{show(domain.low)}, {show(domain.high)}]{extra}"
    return "{" + ", ".join(show(o) for o in domain.options) + "}"


def _text(data: dict[str, Any], key: str, source: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        fail(source, key, f"= {show(value)} is not a string", f'write {key} = "..."')
    return value


def load_space(preset_or_path: str | os.PathLike[str] | Space = DEFAULT_PRESET) -> Space:
    """A shipped preset by name (``gpu``, ``cpu``, ``smoke``), or a user's TOML space file.

    A user file may name a preset as ``base`` (default ``gpu``) and then fix, narrow or
    drop the base's choices in ``[params.<name>]`` tables. Raises :class:`ConfigError`
    naming the file, the key, the value and the fix.
    """
    if isinstance(preset_or_path, Space):
        return preset_or_path
    text = os.fspath(preset_or_path)
    if isinstance(preset_or_path, str) and text in PRESETS:
        return _preset(text)
    if (
        isinstance(preset_or_path, str)
        and not text.endswith(".toml")
        and os.sep not in text
        and "/" not in text
    ):
        raise ConfigError(
            f"space {text!r} is neither a preset nor a .toml file; use one of {', '.join(PRESETS)} or the path of a space file"
        )
    path = Path(text)
    return _from_toml(_read(path), str(path), path.stem, is_preset=False)


@cache
def _preset(name: str) -> Space:
    resource = resources.files("blood_automl.spaces").joinpath("presets", f"{name}.toml")
    source = f"preset {name}.toml"
    try:
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}; fix the preset file") from None
    return _from_toml(data, source, name, is_preset=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such space file; check the path, or use a preset: {', '.join(PRESETS)}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the space file ({exc}); give a readable UTF-8 TOML file"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}; fix the syntax there") from None


def _from_toml(data: dict[str, Any], source: str, default_name: str, is_preset: bool) -> Space:
    for key in data:
        if key not in _TOP_KEYS:
            fail(
                source,
                key,
                "is not a known key of a space file",
                f"use {', '.join(_TOP_KEYS)} (parameters go in [params.<name>] tables)",
            )
    name = _text(data, "name", source, default_name)
    description = _text(data, "description", source, "")
    if is_preset:
        if "base" in data:
            fail(source, "base", "is not allowed in a preset", "define every parameter instead")
        domains = parse_params(data.get("params"), source)
    else:
        base_name = _text(data, "base", source, DEFAULT_PRESET)
        if base_name not in PRESETS:
            fail(
                source,
                "base",
                f"= {show(base_name)} is not a preset",
                f"use one of {', '.join(PRESETS)}",
            )
        base = _preset(base_name)
        domains = parse_params(data.get("params", {}), source, base.params, base_name)
        description = description or f"the {base_name} preset, narrowed"
    return Space(name, tuple(domains.items()), description)
