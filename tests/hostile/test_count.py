"""The hostile-input suite as a whole: enough distinct cases, every module's table counted."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import hostile
from hostile.harness import Case


def all_cases() -> list[Case]:
    """Every ``CASES`` table of the ``test_*`` modules of this package."""
    found: list[Case] = []
    for info in pkgutil.iter_modules([str(Path(hostile.__file__).parent)]):
        if info.name.startswith("test_"):
            found += getattr(importlib.import_module(f"hostile.{info.name}"), "CASES", [])
    return found


def test_there_are_enough_distinct_cases() -> None:
    cases = all_cases()
    assert len({c.id for c in cases}) == len(cases) >= 120
    assert len({c.setup for c in cases}) == len(cases)
