"""The error classes of blood-automl: one base class, one subclass per kind of bad input."""

from __future__ import annotations


class BloodAutoMLError(Exception):
    """Base class: a problem the user can fix. The message is one line: what, where, the fix."""


class DataError(BloodAutoMLError):
    """The data given is missing, malformed, or does not match the study."""


class ConfigError(BloodAutoMLError):
    """A search space, option or configuration value is invalid."""


class StorageError(BloodAutoMLError):
    """The study storage cannot be reached, is missing a driver, or holds no such study."""


class WeightsFileError(ConfigError):
    """A weights file of a backbone is missing, unreadable or not the backbone's weights."""
