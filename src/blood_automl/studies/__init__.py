"""Studies: storage URLs, creating and resuming studies, sampler and pruner, best trial, summaries.

Nothing here imports TensorFlow or trains a model. Typical use by a search worker::

    storage = open_storage(url)                     # default sqlite:///studies/blood-automl.db
    study = create_or_load_study(storage, "blood-automl", settings, {"data_fingerprint": fp})
    optimize_to_target(study, objective, target=100) # several workers end at exactly 100
"""

from __future__ import annotations

from blood_automl.studies.artifacts import (
    ARTIFACT_ROOT_ENV,
    artifact_dir,
    artifact_store_for,
)
from blood_automl.studies.budget import (
    StopAtTarget,
    SurplusTrial,
    claim_slot,
    count_finished,
    optimize_to_target,
    remaining_trials,
)
from blood_automl.studies.folders import data_dir, logs_dir, study_dir
from blood_automl.studies.metadata import StudyVersionWarning, package_versions
from blood_automl.studies.naming import DEFAULT_STUDY, check_study_name
from blood_automl.studies.note import save_study_note, study_note
from blood_automl.studies.records import (
    LOG_ATTR,
    RECIPE_ATTR,
    SPACE_ATTR,
    SURPLUS_ATTR,
    RefitRecord,
    StudyRecord,
    TrialRecord,
    WorkerRecord,
)
from blood_automl.studies.settings import (
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    StudySettings,
    make_pruner,
    make_sampler,
)
from blood_automl.studies.storage import (
    HEARTBEAT_INTERVAL,
    check_shared_url,
    describe_storage,
    open_existing_storage,
    open_storage,
    storage_url,
)
from blood_automl.studies.study import (
    StudyInfo,
    best_trial,
    create_or_load_study,
    get_study,
    list_studies,
    settings_of,
    study_counts,
    summarize,
)
from blood_automl.studies.urls import DEFAULT_STORAGE, mask_url

__all__ = [
    "ARTIFACT_ROOT_ENV",
    "DEFAULT_STORAGE",
    "DEFAULT_STUDY",
    "HEARTBEAT_INTERVAL",
    "LOG_ATTR",
    "OBJECTIVES",
    "PRUNERS",
    "RECIPE_ATTR",
    "SAMPLERS",
    "SPACE_ATTR",
    "SURPLUS_ATTR",
    "RefitRecord",
    "StopAtTarget",
    "StudyInfo",
    "StudyRecord",
    "StudySettings",
    "StudyVersionWarning",
    "SurplusTrial",
    "TrialRecord",
    "WorkerRecord",
    "artifact_dir",
    "artifact_store_for",
    "best_trial",
    "check_shared_url",
    "check_study_name",
    "claim_slot",
    "count_finished",
    "create_or_load_study",
    "data_dir",
    "describe_storage",
    "get_study",
    "list_studies",
    "logs_dir",
    "make_pruner",
    "make_sampler",
    "mask_url",
    "open_existing_storage",
    "open_storage",
    "optimize_to_target",
    "package_versions",
    "remaining_trials",
    "save_study_note",
    "settings_of",
    "storage_url",
    "study_counts",
    "study_dir",
    "study_note",
    "summarize",
]
