"""The search: the objective, the worker loop to a target trial count, refit of the best and export.

Importing this package does not import TensorFlow; a trial imports it when it trains.
"""

from __future__ import annotations

from blood_automl.search.objective import SearchContext, make_objective, trial_seed
from blood_automl.search.run import (
    SearchOptions,
    SearchResult,
    SearchStopped,
    print_summary,
    run_search,
    study_dir,
)

__all__ = [
    "SearchContext",
    "SearchOptions",
    "SearchResult",
    "SearchStopped",
    "make_objective",
    "print_summary",
    "run_search",
    "study_dir",
    "trial_seed",
]
