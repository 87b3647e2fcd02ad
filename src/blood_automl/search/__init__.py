"""The search: the objective, the worker loop to a target trial count, refit of the best and export.

Importing this package does not import TensorFlow; a trial imports it when it trains.
"""

from __future__ import annotations

from blood_automl.search.objective import SearchContext, make_objective, trial_seed
from blood_automl.search.options import SearchOptions
from blood_automl.search.run import SearchResult, SearchStopped
from blood_automl.search.session import print_summary, run_search

__all__ = [
    "SearchContext",
    "SearchOptions",
    "SearchResult",
    "SearchStopped",
    "make_objective",
    "print_summary",
    "run_search",
    "trial_seed",
]
