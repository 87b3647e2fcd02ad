"""The data part: read, validate, clean and split images, and cache a study's prepared data.

Never imports TensorFlow. The entry points::

    load_dataset(data, image_size=96)        -> Dataset           (read + validate)
    clean_dataset(images, labels)            -> CleaningReport    (what to keep, removal groups)
    split_indices(labels, seed=0)            -> Split             (stratified train/val/test)
    prepare_data(data, out_dir)              -> PreparedData      (all of it, cached on disk)
    load_prepared(out_dir)                   -> PreparedData      (memory-mapped, verified)
    inspect_data(data)                       -> DataReport        (what inspect-data prints)
"""

from __future__ import annotations

from blood_automl.data.clean import CleaningReport, RemovalGroup, clean_dataset
from blood_automl.data.dataset import PBC_CLASS_NAMES, SPLIT_NAMES, Dataset
from blood_automl.data.download import BLOODMNIST_FILES, default_cache_dir, fetch_bloodmnist
from blood_automl.data.prepare import (
    PreparedData,
    ProcessedData,
    load_prepared,
    prepare_data,
    process_dataset,
)
from blood_automl.data.readers import load_dataset
from blood_automl.data.report import DataReport, inspect_data, print_report, write_contact_sheet
from blood_automl.data.split import DEFAULT_FRACTIONS, Split, split_indices

__all__ = [
    "BLOODMNIST_FILES",
    "DEFAULT_FRACTIONS",
    "PBC_CLASS_NAMES",
    "SPLIT_NAMES",
    "CleaningReport",
    "DataReport",
    "Dataset",
    "PreparedData",
    "ProcessedData",
    "RemovalGroup",
    "Split",
    "clean_dataset",
    "default_cache_dir",
    "fetch_bloodmnist",
    "inspect_data",
    "load_dataset",
    "load_prepared",
    "prepare_data",
    "print_report",
    "process_dataset",
    "split_indices",
    "write_contact_sheet",
]
