"""Bad space files: each a one-line ConfigError naming the file, the key, the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from blood_automl.errors import ConfigError
from blood_automl.spaces import load_space

BAD_FILES = [
    # (case, file text, what the message must name)
    ("unknown top-level key", 'parms = 1\n', "parms is not a known key"),
    ("base not a preset", 'base = "tpu"\n', 'base = "tpu" is not a preset'),
    ("base not a string", "base = 3\n", "base = 3 is not a string"),
    ("name not a string", "name = [1]\n", "name = [1] is not a string"),
    ("params not a table", "params = 3\n", "params = 3 is not a table"),
    ("entry not a table", "[params]\ndropout = 0.2\n", "params.dropout = 0.2 is not a table"),
    ("unknown parameter", "[params.dropuot]\nvalue = 0.2\n", "params.dropuot is not a known parameter (did you mean 'dropout'?)"),
    ("unknown entry key", "[params.dropout]\nlo = 0.1\nhigh = 0.2\n", "params.dropout.lo is not a known key (did you mean 'low'?)"),
    ("empty entry", "[params.dropout]\n", "params.dropout is empty"),
    ("two forms", '[params.activation]\nvalue = "relu"\nchoices = ["relu"]\n', "params.activation gives value and choices"),
    ("unknown backbone", '[params.backbone]\nchoices = ["MobileNet-0.25", "ResNet999"]\n', 'params.backbone.choices[1] = "ResNet999" is not a backbone'),
    ("unknown choice", '[params.optimizer]\nvalue = "sgd"\n', 'params.optimizer.value = "sgd" is not one of'),
    ("empty range", "[params.dropout]\nlow = 0.5\nhigh = 0.1\n", "params.dropout is an empty range: low = 0.5 > high = 0.1"),
    ("empty choices", "[params.activation]\nchoices = []\n", "params.activation.choices is empty"),
    ("choices not a list", '[params.activation]\nchoices = "relu"\n', 'params.activation.choices = "relu" is not a list'),
    ("duplicate choice", '[params.activation]\nchoices = ["relu", "relu"]\n', 'params.activation.choices[1] = "relu" is listed twice'),
    ("string for a float", '[params.dropout]\nvalue = "high"\n', 'params.dropout.value = "high" must be a number'),
    ("float for an int", "[params.dense_layers]\nvalue = 1.5\n", "params.dense_layers.value = 1.5 must be an integer"),
    ("bool for an int", "[params.dense_layers]\nchoices = [true]\n", "params.dense_layers.choices[0] = true must be an integer"),
    ("int for a bool", "[params.se_block]\nvalue = 1\n", "params.se_block.value = 1 must be true or false"),
    ("dropout of 1", "[params.dropout]\nvalue = 1.0\n", "params.dropout.value = 1.0 is outside the valid limits [0, 1)"),
    ("negative learning rate", "[params.head_lr]\nlow = -1e-3\nhigh = 1e-2\n", "params.head_lr.low = -0.001 is outside the valid limits (0, 1]"),
    ("zero batch", "[params.batch_size]\nchoices = [0, 64]\n", "params.batch_size.choices[0] = 0 is outside"),
    ("nan", "[params.dropout]\nvalue = nan\n", "params.dropout.value = NaN must be a finite number"),
    ("range for a string", "[params.activation]\nlow = 1\nhigh = 2\n", "params.activation is a str parameter and cannot take low/high"),
    ("range without high", "[params.dropout]\nlow = 0.1\n", "params.dropout has no high"),
    ("log from zero", "[params.l2]\nlow = 0.0\nhigh = 0.1\nlog = true\n", "params.l2.low = 0.0 must be above 0 on a log scale"),
    ("log not a bool", '[params.l2]\nlow = 1e-5\nhigh = 0.1\nlog = "yes"\n', 'params.l2.log = "yes" must be true or false'),
    ("log with step", "[params.dropout]\nlow = 0.1\nhigh = 0.5\nlog = true\nstep = 0.1\n", "params.dropout.step cannot be combined with log = true"),
    ("step not dividing", "[params.unfreeze_fraction]\nlow = 0.0\nhigh = 0.5\nstep = 0.3\n", "params.unfreeze_fraction.step = 0.3 does not divide"),
    ("negative step", "[params.dense_layers]\nlow = 1\nhigh = 3\nstep = -1\n", "params.dense_layers.step = -1 must be positive"),
    ("outside base range", 'base = "cpu"\n[params.dropout]\nlow = 0.0\nhigh = 0.55\n', "params.dropout allows 0.55, outside [0.0, 0.5] of base 'cpu'"),
    ("outside base choices", 'base = "cpu"\n[params.backbone]\nvalue = "ConvNeXtBase"\n', "params.backbone allows \"ConvNeXtBase\", which base 'cpu' does not"),
    ("changes a base's fixed value", 'base = "cpu"\n[params.batch_size]\nvalue = 32\n', "params.batch_size is fixed to 64 in base 'cpu'"),
    ("range where base has choices", 'base = "gpu"\n[params.batch_size]\nlow = 32\nhigh = 64\n', "params.batch_size is a range but base 'gpu' gives choices"),
    ("exclude everything", 'base = "cpu"\n[params.activation]\nexclude = ["relu", "swish", "selu"]\n', "params.activation.exclude drops every choice"),
    ("exclude a value not in base", 'base = "cpu"\n[params.backbone]\nexclude = ["VGG16"]\n', "params.backbone.exclude[0] = \"VGG16\" is not among the choices of base 'cpu'"),
    ("exclude on a range", "[params.dropout]\nexclude = [0.1]\n", "params.dropout.exclude needs a base space that gives choices"),
    ("syntax error", "[params.dropout\nvalue = 0.2\n", "TOML syntax error"),
    ("duplicate key", "[params.dropout]\nvalue = 0.2\nvalue = 0.3\n", "(at line 3"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES]
)
def test_a_bad_space_file_is_a_one_line_config_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "; " in message  # then the fix


def test_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('base = "cpu"\n\n[params.dropout]\nvalue = = 0.2\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 4"):
        load_space(path)


SMUGGLED = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('[params.backbone]\nchoices = ["{code}"]\n', "params.backbone.choices[0]"),
        ('[params.activation]\nvalue = "{code}"\n', "params.activation.value"),
        ('[params.dropout]\nvalue = "{code}"\n', "params.dropout.value"),
        ('[params.dropout]\nlow = "{code}"\nhigh = 0.5\n', "params.dropout.low"),
        ('base = "{code}"\n', "base"),
        ('[params."{code}"]\nvalue = 1\n', "is not a known parameter"),
    ],
)
def test_code_in_a_space_file_stays_an_inert_rejected_string(
    tmp_path: Path, template: str, expected: str
) -> None:
    marker = tmp_path / "pwned"
    code = SMUGGLED.format(marker=marker)
    path = tmp_path / "evil.toml"
    path.write_text(template.replace("{code}", code), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert expected in str(info.value) and "__import__" in str(info.value)
    assert not marker.exists()


def test_code_in_a_name_is_only_a_name(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = SMUGGLED.format(marker=marker)
    path = tmp_path / "named.toml"
    path.write_text(f'name = "{code}"\ndescription = "{code}"\n', encoding="utf-8")
    space = load_space(path)
    assert space.name == code and not marker.exists()
    assert space.version == load_space("gpu").version
