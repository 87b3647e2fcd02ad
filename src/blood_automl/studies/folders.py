"""A study's own folders: the study folder, its prepared data and its trial logs."""

from __future__ import annotations

from pathlib import Path

from blood_automl.studies.artifacts import artifact_dir


def study_dir(storage_url: str | None, study: str) -> Path:
    """The study's own folder (``studies/<study>`` by default): prepared data, artifacts, logs."""
    return artifact_dir(storage_url, study).parent


def data_dir(storage_url: str | None, study: str) -> Path:
    """Where the study's prepared data lives: ``<study folder>/data``."""
    return study_dir(storage_url, study) / "data"


def logs_dir(storage_url: str | None, study: str) -> Path:
    """Where the study's trial and worker logs live: ``<study folder>/logs``."""
    return study_dir(storage_url, study) / "logs"
