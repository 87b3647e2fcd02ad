"""Space files as text: templates and printed presets load back; the README documents every parameter."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from blood_automl.errors import ConfigError
from blood_automl.spaces import PARAMS, PRESETS, load_space
from blood_automl.spaces.space import MAX_SPACE_FILE_BYTES, read_space_file
from blood_automl.spaces.template import reference_table, space_toml, template_toml

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("preset", PRESETS)
def test_template_loads_back_as_the_preset(preset: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(template_toml(preset), encoding="utf-8")
    loaded = load_space(path)
    assert loaded.base == preset
    assert loaded.params == load_space(preset).params
    assert loaded.version == load_space(preset).version


def test_template_explains_every_parameter() -> None:
    text = template_toml("cpu")
    for spec in PARAMS:
        assert f"# {spec.name}: {spec.meaning}." in text
        assert f"[params.{spec.name}]" in text
    assert 'base = "cpu"' in text
    assert "exclude = [A]" in text and "low = L  high = H" in text


def test_template_refuses_an_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="'tpu' is not a preset; use one of gpu, cpu, smoke"):
        template_toml("tpu")


def test_a_narrowed_space_prints_as_a_file_that_loads_back(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        'base = "cpu"\n[params.backbone]\nexclude = ["MobileNetV2"]\n'
        "[params.dropout]\nlow = 0.1\nhigh = 0.3\n"
        '[params.schedule]\nvalue = "single_phase"\n[params.label_smoothing]\nlow = 0.0\nhigh = 0.2\nstep = 0.05\n',
        encoding="utf-8",
    )
    space = load_space(mine)
    printed = tmp_path / "printed.toml"
    printed.write_text(space_toml(space), encoding="utf-8")
    again = load_space(printed)
    assert again.params == space.params and again.version == space.version
    assert tomllib.loads(printed.read_text(encoding="utf-8"))["base"] == "cpu"


def test_readme_has_the_generated_parameter_table() -> None:
    section = _section("The space file")
    assert reference_table() in section, "regenerate the table: blood_automl.spaces.template"
    for spec in PARAMS:
        assert f"`{spec.name}`" in section


# -- a file without base ------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nobase.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_without_base_narrows_the_first_preset_it_fits(tmp_path: Path) -> None:
    path = _write(tmp_path, "[params.dropout]\nlow = 0.1\nhigh = 0.2\n")
    on_cpu = load_space(path, bases=("cpu", "gpu"))
    assert on_cpu.base == "cpu"
    assert on_cpu.backbones == load_space("cpu").backbones
    assert load_space(path, bases=("gpu",)).base == "gpu"


def test_a_file_without_base_asking_for_a_gpu_backbone_narrows_gpu(tmp_path: Path) -> None:
    path = _write(tmp_path, '[params.backbone]\nchoices = ["EfficientNetB0", "MobileNetV2"]\n')
    space = load_space(path, bases=("cpu", "gpu"))
    assert space.base == "gpu" and space.backbones == ("MobileNetV2", "EfficientNetB0")


def test_a_file_without_base_fitting_no_preset_names_the_widest(tmp_path: Path) -> None:
    path = _write(tmp_path, '[params.backbone]\nvalue = "ResNet50"\n')  # recipes only
    with pytest.raises(ConfigError, match=r"allows \"ResNet50\", which base 'gpu' does not"):
        load_space(path, bases=("cpu", "gpu"))


def test_a_named_base_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, 'base = "gpu"\n[params.dropout]\nlow = 0.1\nhigh = 0.2\n')
    assert load_space(path, bases=("cpu", "gpu")).base == "gpu"


# -- what is refused before reading -------------------------------------------------------


def test_a_file_above_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    with path.open("wb") as f:
        f.truncate(MAX_SPACE_FILE_BYTES + 1)
    with pytest.raises(ConfigError, match="above the limit of 1,048,576"):
        read_space_file(path)


def test_deep_nesting_is_one_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="nests arrays or tables too deeply"):
        load_space(path)


def test_the_readme_example_loads(tmp_path: Path) -> None:
    section = _section("The space file")
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = _write(tmp_path, example)
    space = load_space(path)
    assert space.name == "mobilenets" and space.base == "gpu"
    assert space.fixed()["optimizer"] == "adamw"
