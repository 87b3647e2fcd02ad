"""The names and forms of what a study stores: study and trial user attributes."""

from __future__ import annotations

SPACE_ATTR = "space"
"""Study attribute: the search space (its stored form, with its schema version)."""
RECIPE_ATTR = "recipe"
"""Trial attribute of a queued published recipe (or the default start): its name."""
LOG_ATTR = "log"
"""Trial attribute: the path of the trial's own log file."""
