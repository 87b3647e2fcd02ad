"""Where a study's artifacts (curves, confusion matrices) live for optuna-dashboard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore

from blood_automl.errors import StorageError
from blood_automl.studies.naming import check_study_name
from blood_automl.studies.urls import DEFAULT_STORAGE, parse_url, sqlite_file

ARTIFACT_ROOT_ENV = "BLOOD_AUTOML_ARTIFACT_ROOT"
"""Environment variable naming the folder that holds ``<study>/artifacts`` for server storages."""
DEFAULT_ARTIFACT_ROOT = Path("studies")


def artifact_dir(url: str | None, study_name: str, root: str | Path | None = None) -> Path:
    """The artifact folder of ``study_name`` (not created).

    For a SQLite file it is ``<folder of the file>/<study>/artifacts`` (by default
    ``studies/<study>/artifacts``). For a server URL it is ``<root>/<study>/artifacts``
    with ``root`` from the argument, else ``$BLOOD_AUTOML_ARTIFACT_ROOT``, else
    ``./studies``; workers on several machines should point it at a shared folder.
    """
    check_study_name(study_name)
    if root is None:
        parsed = parse_url(DEFAULT_STORAGE if url is None else url)
        path = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
        if path is not None:
            return path.parent / study_name / "artifacts"
        root = os.environ.get(ARTIFACT_ROOT_ENV) or DEFAULT_ARTIFACT_ROOT
    return Path(root) / study_name / "artifacts"


def artifact_store_for(
    url: str | None, study_name: str, root: str | Path | None = None
) -> FileSystemArtifactStore:
    """An Optuna file-system artifact store in :func:`artifact_dir`, the folder created."""
    folder = artifact_dir(url, study_name, root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(
            f"cannot create the artifact folder {folder} ({e.strerror or e}); make it "
            f"writable or set {ARTIFACT_ROOT_ENV} to another folder"
        ) from None
    return FileSystemArtifactStore(folder)


def upload_png(store: Any, path: Path, trial: optuna.Trial) -> str:
    """Attach the PNG file at ``path`` to ``trial`` in ``store``; the artifact's id.

    ``optuna.artifacts.upload_artifact`` copies the file into the store and records it in
    the trial's system attributes under a key optuna-dashboard reads to list the trial's
    images; the key is Optuna's and undocumented.
    """
    from optuna.artifacts import upload_artifact

    return upload_artifact(
        artifact_store=store,
        file_path=str(path),
        study_or_trial=trial,
        mimetype="image/png",
    )
