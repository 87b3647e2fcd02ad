"""The Space type: a validated, immutable search space loaded from a preset or a user's TOML file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
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
#: 2: schedule, batch_norm and warmup_epochs; head_epochs and head_lr apply to two_phase only.
SCHEMA_VERSION = 2
#: Per older schema, the parameters it did not have and the fixed values that make a space
#: stored by it train as it did then. Such a space keeps its schema and version.
OLD_SCHEMAS: dict[int, dict[str, Any]] = {
    1: {"schedule": "two_phase", "batch_norm": "frozen", "warmup_epochs": 0},
}
#: The shipped presets, in the order a user would consider them.
PRESETS: tuple[str, ...] = ("gpu", "cpu", "smoke")
#: The preset a search uses when none is given.
DEFAULT_PRESET = "gpu"

_TOP_KEYS = ("base", "name", "description", "params")
#: The largest space file read (a real one is a few kilobytes).
MAX_SPACE_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Space:
    """A search space: one domain per parameter, in :data:`PARAM_NAMES` order.

    Build it with :func:`load_space` or :meth:`Space.from_dict`, which validate;
    ``version`` changes whenever the domains do.
    """

    name: str
    domains: tuple[tuple[str, Domain], ...]
    description: str = ""
    #: The preset a space file narrowed ("" for a preset or a stored space); not part of
    #: the version, which depends on the domains alone.
    base: str = field(default="", compare=False)
    #: The schema the space was stored with: an older one (a study made by an earlier
    #: version) keeps its own version string and stored form.
    schema: int = SCHEMA_VERSION

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
        return f"{self.schema}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

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
            "schema": self.schema,
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
        schema = data.get("schema")
        if schema != SCHEMA_VERSION and schema not in OLD_SCHEMAS:
            fail(
                source,
                "schema",
                f"= {show(schema)} is not a space schema this code reads "
                f"({', '.join(str(v) for v in (*OLD_SCHEMAS, SCHEMA_VERSION))})",
                "use the blood-automl version that made the study",
            )
        name, description = (
            _text(data, "name", source, "space"),
            _text(data, "description", source, ""),
        )
        params = data.get("params")
        if schema in OLD_SCHEMAS and isinstance(params, dict):
            params = _upgrade(params, OLD_SCHEMAS[int(schema)], source)
        domains = tuple(parse_params(params, source).items())
        space = cls(name, domains, description, schema=int(schema))
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
        added = OLD_SCHEMAS.get(self.schema, {})
        return {name: domain.to_dict() for name, domain in self.domains if name not in added}


def _upgrade(params: dict[str, Any], added: dict[str, Any], source: str) -> dict[str, Any]:
    """The params of a space stored by an older schema, with the parameters it lacked fixed."""
    for name in added:
        if name in params:
            fail(
                source,
                f"params.{name}",
                "is not a parameter of the space schema the study was stored with",
                "store the space again with Space.to_dict()",
            )
    return {**params, **{name: {"value": value} for name, value in added.items()}}


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


def load_space(
    preset_or_path: str | os.PathLike[str] | Space = DEFAULT_PRESET,
    *,
    bases: Sequence[str] = (DEFAULT_PRESET,),
) -> Space:
    """A shipped preset by name (``gpu``, ``cpu``, ``smoke``), or a user's TOML space file.

    A user file may name a preset as ``base`` and then fix, narrow or drop the base's
    choices in ``[params.<name>]`` tables. A file that names none narrows the first of
    ``bases`` its values fit (``Space.base`` says which). Raises :class:`ConfigError`
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
    data = read_space_file(path)
    try:
        if "base" in data or not bases:
            return _from_toml(data, str(path), path.stem, is_preset=False)
        for base in bases[:-1]:
            try:
                return _from_toml(data, str(path), path.stem, is_preset=False, base=base)
            except ConfigError:
                continue
        return _from_toml(data, str(path), path.stem, is_preset=False, base=bases[-1])
    except RecursionError:
        raise _too_deep(path) from None


@cache
def _preset(name: str) -> Space:
    resource = resources.files("blood_automl.spaces").joinpath("presets", f"{name}.toml")
    source = f"preset {name}.toml"
    try:
        data = tomllib.loads(resource.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}; fix the preset file") from None
    return _from_toml(data, source, name, is_preset=True)


def read_space_file(path: Path) -> dict[str, Any]:
    """The TOML table of a space file, refusing what is not a small, regular UTF-8 file.

    A FIFO, a device (``/dev/zero``), a folder or a file above
    :data:`MAX_SPACE_FILE_BYTES` is refused before anything is read from it, and nesting
    too deep to parse is a one-line error.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such space file; check the path, or use a preset: {', '.join(PRESETS)}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the space file ({exc.strerror or exc}); give a readable TOML file"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"{path}: is {_file_kind(info.st_mode)}, not a regular file; give the path of a TOML "
            "space file (blood-automl space template --preset cpu writes one)"
        )
    if info.st_size > MAX_SPACE_FILE_BYTES:
        raise ConfigError(
            f"{path}: the space file is {info.st_size:,} bytes, above the limit of "
            f"{MAX_SPACE_FILE_BYTES:,}; a space file is a few kilobytes of TOML: give that file"
        )
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SPACE_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the space file ({exc.strerror or exc}); give a readable TOML file"
        ) from None
    if len(raw) > MAX_SPACE_FILE_BYTES:
        raise ConfigError(
            f"{path}: the space file grew above the limit of {MAX_SPACE_FILE_BYTES:,} bytes while "
            "it was read; give a small TOML file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}); give a "
            "TOML space file saved as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}; fix the syntax there") from None
    except RecursionError:
        raise _too_deep(path) from None


def _too_deep(path: Path) -> ConfigError:
    return ConfigError(
        f"{path}: the space file nests arrays or tables too deeply to read; a space file "
        "has one [params.<name>] table per parameter with flat values: write it that way"
    )


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _from_toml(
    data: dict[str, Any],
    source: str,
    default_name: str,
    is_preset: bool,
    base: str = DEFAULT_PRESET,
) -> Space:
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
        return Space(name, tuple(domains.items()), description)
    base_name = _text(data, "base", source, base)
    if base_name not in PRESETS:
        fail(
            source,
            "base",
            f"= {show(base_name)} is not a preset",
            f"use one of {', '.join(PRESETS)}",
        )
    domains = parse_params(data.get("params", {}), source, _preset(base_name).params, base_name)
    description = description or f"the {base_name} preset, narrowed"
    return Space(name, tuple(domains.items()), description, base=base_name)
