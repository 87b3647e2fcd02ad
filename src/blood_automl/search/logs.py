"""A trial's own log file: where it is, sending a trial process's output there, its path on the trial."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from blood_automl.studies import open_storage, study_dir
from blood_automl.studies.records import LOG_ATTR
from blood_automl.trainer.quiet import (
    LEVEL_ENV,
    QUIET_ENV,
    TRIAL_LOG_LEVEL,
    native_stderr_hidden,
    redirect_output,
)

if TYPE_CHECKING:
    from optuna.storages import BaseStorage


def trial_log_path(folder: Path, number: int) -> Path:
    """``<study folder>/logs/trial-<number>.log``."""
    return folder / "logs" / f"trial-{number}.log"


def log_trial_output(
    storage_url: str | None, study: str, trial_id: int, *, storage: BaseStorage | None = None
) -> Path | None:
    """In a trial's process: send fds 1 and 2 to the trial's log file and record its path.

    Call it before each trial, the first time before TensorFlow is imported. The path is
    stored on the trial (user attribute ``log``), so the search can show the end of the
    log when it fails. ``storage``: the study's storage, when the process has it open.
    """
    import faulthandler

    folder = study_dir(storage_url, study).absolute()
    try:
        with native_stderr_hidden():
            if storage is None:
                storage = open_storage(storage_url, heartbeat=False)
            number = storage.get_trial_number_from_id(trial_id)
    except Exception:  # the trial itself will fail on the storage and say why
        return redirect_output(folder / "logs" / f"trial-id-{trial_id}.log")
    path = redirect_output(trial_log_path(folder, number))
    if os.environ.get(QUIET_ENV):
        os.environ[LEVEL_ENV] = TRIAL_LOG_LEVEL
    faulthandler.enable(file=sys.stderr)  # a crash leaves the Python stack in the log
    if path is not None:
        with contextlib.suppress(Exception):
            storage.set_trial_user_attr(trial_id, LOG_ATTR, str(path))
    return path
