"""What a study records beyond Optuna's own tables, and the check made when it is resumed."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from blood_automl.errors import ConfigError, DataError
from blood_automl.studies import records as rec
from blood_automl.studies.records import VERSIONS_ATTR as VERSIONS_KEY

PACKAGES = ("blood-automl", "optuna", "tensorflow", "keras", "numpy")

# attributes about the data: a mismatch is a DataError; the rest are ConfigErrors
DATA_KEYS = frozenset(
    {
        rec.DATA_FINGERPRINT_ATTR,
        rec.SPLIT_ATTR,
        rec.DATA_SOURCE_ATTR,
        rec.N_IMAGES_ATTR,
        rec.CLASS_NAMES_ATTR,
    }
)
# attribute -> the option that sets it, for the fix in a mismatch message
OPTIONS = {
    rec.OBJECTIVE_ATTR: "--objective",
    rec.SEED_ATTR: "--seed",
    rec.IMAGE_SIZE_ATTR: "--image-size",
    rec.SPACE_ATTR: "--space",
    rec.SPACE_VERSION_ATTR: "--space",
    rec.WEIGHTS_ATTR: "--weights",
    rec.MAX_RESOURCE_ATTR: "--preset",
    rec.PRESET_ATTR: "--preset",
    rec.DATA_FINGERPRINT_ATTR: "--data",
    rec.SPLIT_ATTR: "--data",
    rec.DATA_SOURCE_ATTR: "--data",
}


class StudyVersionWarning(UserWarning):
    """A study is resumed with package versions other than those it was created with."""


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages behind a result, read without importing them."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def as_json(name: str, value: Any) -> Any:
    """``value`` as it comes back from the storage (tuples become lists, keys strings)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        raise ConfigError(
            f"study attribute {name!r} must be JSON data (numbers, strings, lists, dicts), "
            f"but got {type(value).__name__}"
        ) from None


def record(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` and the package versions as user attributes, the versions last."""
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr(VERSIONS_KEY, package_versions())


def check(study: optuna.Study, expected: Mapping[str, Any]) -> None:
    """Refuse to resume ``study`` with settings that change results; warn on new versions.

    A key stored with the study and given with another value raises a one-line
    :class:`DataError` (data keys) or :class:`ConfigError` naming the attribute, both
    values and the fix. A key the study lacks is recorded. Package versions only warn.
    """
    stored = study.user_attrs
    missing = {}
    for key, value in expected.items():
        if key not in stored:
            missing[key] = value
            continue
        if stored[key] != value:
            raise _mismatch(study.study_name, key, stored[key], value)
    for key, value in missing.items():
        study.set_user_attr(key, value)
    _warn_versions(study.study_name, stored.get(VERSIONS_KEY))


def _mismatch(study: str, key: str, stored: Any, given: Any) -> DataError | ConfigError:
    option = OPTIONS.get(key)
    fix = f"resume with the original {option}" if option else "resume with the original options"
    cls = DataError if key in DATA_KEYS else ConfigError
    return cls(
        f"study '{study}' was created with {key}={_show(stored, given)}, but this run has "
        f"{key}={_show(given, stored)}; use a new --study name, or {fix}"
    )


def _show(value: Any, other: Any) -> str:
    """A short rendering of ``value``; for two dicts, only the entries that differ."""
    if isinstance(value, dict) and isinstance(other, dict):
        differing = sorted(k for k in value.keys() | other.keys() if value.get(k) != other.get(k))
        shown = {k: value.get(k, "<absent>") for k in differing[:3]}
        text = json.dumps(shown, sort_keys=True) + (" ..." if len(differing) > 3 else "")
    else:
        text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _warn_versions(study: str, stored: Any) -> None:
    if not isinstance(stored, dict):
        return
    current = package_versions()
    changed = [
        f"{name} {stored.get(name)} -> {version}"
        for name, version in current.items()
        if name in stored and stored.get(name) != version
    ]
    if changed:
        warnings.warn(
            f"study '{study}' was created with other package versions ({', '.join(changed)}); "
            f"results may not be exactly comparable",
            StudyVersionWarning,
            stacklevel=3,
        )
