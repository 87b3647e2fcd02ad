"""blood-automl: automatic, reproducible model search for blood-cell image classification.

Importing this package does not import TensorFlow; the parts that train models import it
when they are first used.
"""

from __future__ import annotations

from blood_automl.errors import BloodAutoMLError, ConfigError, DataError, StorageError

__version__ = "0.1.0"

__all__ = [
    "BloodAutoMLError",
    "ConfigError",
    "DataError",
    "StorageError",
    "__version__",
]
