"""Presets load; user files fix, narrow and drop choices; versions; to_dict/from_dict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from blood_automl.errors import ConfigError
from blood_automl.spaces import (
    BACKBONES,
    PARAM_NAMES,
    PRESETS,
    RECIPE_ONLY_BACKBONES,
    SCHEMA_VERSION,
    Choices,
    Fixed,
    Range,
    Space,
    load_space,
)

ALL = set(PARAM_NAMES)
SEARCHED = {
    "gpu": ALL,
    "cpu": {
        "backbone",
        "dense_width",
        "activation",
        "dropout",
        "head_batch_norm",
        "l2",
        "randaugment_ops",
        "randaugment_magnitude",
        "unfreeze_fraction",
        "schedule",
        "batch_norm",
        "head_lr",
        "finetune_lr",
        "label_smoothing",
    },
    "smoke": {
        "dense_width",
        "activation",
        "dropout",
        "randaugment_ops",
        "randaugment_magnitude",
        "head_lr",
        "unfreeze_fraction",
        "finetune_lr",
    },
}
# The backbones the issue requires the search to offer.
REQUIRED_BACKBONES = {
    "MobileNet-0.25", "MobileNet-0.5", "MobileNet-0.75", "MobileNet-1.0", "MobileNetV2",
    "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetB1", "EfficientNetB2",
    "EfficientNetB3", "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2S", "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ResNet50V2", "DenseNet121", "VGG16",
}  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset: str) -> None:
    space = load_space(preset)
    assert space.name == preset and space.description
    assert [name for name, _ in space.domains] == list(PARAM_NAMES)
    assert re.fullmatch(rf"{SCHEMA_VERSION}-[0-9a-f]{{8}}", space.version)
    assert space.searched() == SEARCHED[preset]
    assert load_space(preset) is space  # presets are parsed once


def test_presets_cover_the_registry_except_recipe_only_backbones() -> None:
    gpu, cpu = set(load_space("gpu").backbones), set(load_space("cpu").backbones)
    assert gpu | cpu == set(BACKBONES) - RECIPE_ONLY_BACKBONES
    assert gpu >= REQUIRED_BACKBONES
    assert not gpu & RECIPE_ONLY_BACKBONES
    assert cpu == {name for name, spec in BACKBONES.items() if spec.cpu}
    assert load_space("smoke").backbones == ("MobileNet-0.25",)


def test_preset_epochs_and_batch() -> None:
    gpu, cpu, smoke = (load_space(p) for p in PRESETS)
    assert gpu["head_epochs"] == Range(1, 10) and gpu["finetune_epochs"] == Range(8, 40)
    assert (
        cpu.fixed().items() >= {"head_epochs": 2, "finetune_epochs": 12, "batch_size": 64}.items()
    )
    assert smoke.fixed()["head_epochs"] == 1 and smoke.fixed()["finetune_epochs"] == 1
    # Every preset can train the whole backbone, in one phase or after the head, with batch
    # norm frozen or adapting (smoke: the fast fixed choices).
    for space in (gpu, cpu, smoke):
        assert space["unfreeze_fraction"].high == 1.0
    for space in (gpu, cpu):
        assert space["schedule"] == Choices(("single_phase", "two_phase"))
        assert space["batch_norm"] == Choices(("adapt", "frozen"))


def test_a_user_file_fixes_narrows_and_drops_choices(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
base = "cpu"
name = "tiny"

[params.backbone]
choices = ["MobileNetV2", "MobileNet-0.25"]

[params.dropout]
value = 0.2

[params.head_lr]
low = 1e-3
high = 5e-3

[params.activation]
exclude = ["selu"]
""",
    )
    space = load_space(path)
    cpu = load_space("cpu")
    assert space.name == "tiny"
    assert space.backbones == ("MobileNet-0.25", "MobileNetV2")  # the base's order
    assert space["dropout"] == Fixed(0.2) and "dropout" not in space.searched()
    assert space["head_lr"] == Range(1e-3, 5e-3, log=True)  # log inherited from the base
    assert space["activation"] == Choices(("relu", "swish"))
    assert space["mix"] == cpu["mix"]
    assert space.version != cpu.version
    assert load_space(str(path)) == space


def test_a_file_with_only_a_base_is_the_base(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, 'base = "smoke"\n'))
    assert (
        space.domains == load_space("smoke").domains
        and space.version == load_space("smoke").version
    )
    assert load_space(write(tmp_path, "", "empty.toml")).domains == load_space("gpu").domains


def test_version_is_stable_under_formatting_and_changes_with_content(tmp_path: Path) -> None:
    a = load_space(write(tmp_path, "[params.dropout]\nlow = 0\nhigh = 0.5\n", "a.toml"))
    b = load_space(
        write(
            tmp_path,
            '# a comment\nname = "other"\n\n[params.dropout]\nhigh = 0.50\nlow = 0.0\n',
            "b.toml",
        )
    )
    c = load_space(write(tmp_path, "[params.dropout]\nlow = 0\nhigh = 0.4\n", "c.toml"))
    d = load_space(write(tmp_path, "[params.dropout]\nvalue = 0.4\n", "d.toml"))
    assert a.version == b.version and a.name != b.name
    assert len({a.version, c.version, d.version, load_space("gpu").version}) == 4
    assert len({load_space(p).version for p in PRESETS}) == 3


@pytest.mark.parametrize("preset", PRESETS)
def test_to_dict_from_dict_round_trip_through_json(preset: str) -> None:
    space = load_space(preset)
    stored = json.loads(json.dumps(space.to_dict()))
    assert stored["version"] == space.version and stored["schema"] == SCHEMA_VERSION
    rebuilt = Space.from_dict(stored)
    assert rebuilt == space and rebuilt.version == space.version and rebuilt.name == preset


def test_from_dict_rejects_a_tampered_or_foreign_space() -> None:
    stored = load_space("cpu").to_dict()
    tampered = json.loads(json.dumps(stored))
    tampered["params"]["dropout"] = {"low": 0.0, "high": 0.3, "log": False}
    with pytest.raises(ConfigError, match=r"<stored space>: version .* does not match"):
        Space.from_dict(tampered)
    with pytest.raises(ConfigError, match="schema"):
        Space.from_dict({**stored, "schema": SCHEMA_VERSION + 1})
    incomplete = json.loads(json.dumps(stored))
    del incomplete["params"]["loss"], incomplete["version"]
    with pytest.raises(ConfigError, match=r"params\.loss is missing"):
        Space.from_dict(incomplete)


def test_load_space_errors_name_what_was_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'tpu' is neither a preset nor a \.toml file"):
        load_space("tpu")
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: no such space file")):
        load_space(missing)
    assert load_space(load_space("cpu")) is load_space("cpu")


def test_describe_lists_every_parameter() -> None:
    text = load_space("gpu").describe()
    assert all(name in text for name in PARAM_NAMES) and "when loss == 'focal'" in text
