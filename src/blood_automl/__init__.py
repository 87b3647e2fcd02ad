"""blood-automl: automatic, reproducible model search for blood-cell image classification.

Importing this package imports neither TensorFlow nor Optuna: the public names below are
loaded from their parts when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from blood_automl.errors import BloodAutoMLError, ConfigError, DataError, StorageError

__version__ = "0.1.0"

# public name -> the part that defines it
_LAZY = {
    "load_dataset": "blood_automl.data",
    "prepare_data": "blood_automl.data",
    "load_prepared": "blood_automl.data",
    "inspect_data": "blood_automl.data",
    "TrialConfig": "blood_automl.spaces",
    "load_space": "blood_automl.spaces",
    "suggest": "blood_automl.spaces",
    "open_storage": "blood_automl.studies",
    "create_or_load_study": "blood_automl.studies",
    "SearchOptions": "blood_automl.search",
    "run_search": "blood_automl.search",
    "refit_best": "blood_automl.export.refit",
    "train": "blood_automl.trainer",
}

__all__ = [
    "BloodAutoMLError",
    "ConfigError",
    "DataError",
    "StorageError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'blood_automl' has no attribute {name!r}")
