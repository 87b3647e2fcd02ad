"""Study names: the default and the characters allowed (a name is also a folder name)."""

from __future__ import annotations

import re

from blood_automl.errors import ConfigError

DEFAULT_STUDY = "blood-automl"
"""The study name used when ``--study`` is not given."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")


def check_study_name(name: str) -> str:
    """Return ``name`` if it is a valid study name, else raise a one-line ConfigError.

    A name is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, so
    that ``studies/<name>/`` is a plain folder on every system.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"study name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (e.g. --study blood-automl-2)"
        )
    return name
