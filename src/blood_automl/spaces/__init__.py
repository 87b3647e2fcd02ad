"""The search space: presets and user space files, ``suggest(trial, space) -> TrialConfig``, recipes.

Imports neither TensorFlow nor Optuna, and touches no storage.
"""

from __future__ import annotations

from blood_automl.spaces.config import TrialConfig
from blood_automl.spaces.domains import Choices, Domain, Fixed, Range
from blood_automl.spaces.params import (
    DEFAULTS,
    IMAGE_SIZE,
    PARAM_NAMES,
    PARAMS,
    ParamSpec,
    When,
    config_to_values,
    default_params,
)
from blood_automl.spaces.recipes import (
    DEFAULT_START,
    RECIPE_ONLY_BACKBONES,
    RECIPES,
    STAND_INS,
    Recipe,
    applicable_recipes,
    default_start,
    get_recipe,
    recipe_config,
    recipe_params,
)
from blood_automl.spaces.registry import BACKBONES, BackboneSpec, get_backbone
from blood_automl.spaces.space import (
    DEFAULT_PRESET,
    PRESETS,
    SCHEMA_VERSION,
    Space,
    load_space,
    read_space_file,
)
from blood_automl.spaces.suggest import TrialLike, suggest

__all__ = [
    "BACKBONES",
    "DEFAULTS",
    "DEFAULT_PRESET",
    "DEFAULT_START",
    "IMAGE_SIZE",
    "PARAMS",
    "PARAM_NAMES",
    "PRESETS",
    "RECIPES",
    "RECIPE_ONLY_BACKBONES",
    "SCHEMA_VERSION",
    "STAND_INS",
    "BackboneSpec",
    "Choices",
    "Domain",
    "Fixed",
    "ParamSpec",
    "Range",
    "Recipe",
    "Space",
    "TrialConfig",
    "TrialLike",
    "When",
    "applicable_recipes",
    "config_to_values",
    "default_params",
    "default_start",
    "get_backbone",
    "get_recipe",
    "load_space",
    "read_space_file",
    "recipe_config",
    "recipe_params",
    "suggest",
]
