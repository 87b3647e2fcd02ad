"""Study tests on real SQLite files: create, resume, settings check, best trial, summaries."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest

from blood_automl.errors import ConfigError, DataError, StorageError
from blood_automl.studies import (
    StudySettings,
    StudyVersionWarning,
    best_trial,
    check_study_name,
    create_or_load_study,
    get_study,
    list_studies,
    make_pruner,
    make_sampler,
    open_storage,
    package_versions,
    settings_of,
    study_counts,
    summarize,
)
from blood_automl.studies.settings import sampler_seed

META = {
    "space_version": 3,
    "space": {"backbones": ["mobilenet", "efficientnetb0"], "max_epochs": 12},
    "data_fingerprint": "sha256:abc123",
    "split": {"val": 0.15, "test": 0.15, "seed": 0},
    "image_size": 96,
    "weights": "none",
}


@pytest.fixture
def storage(tmp_path: Path) -> optuna.storages.BaseStorage:
    return open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=False)


def _settings(**changes: object) -> StudySettings:
    base: dict[str, object] = {"seed": 3, "max_resource": 12, "metadata": dict(META)}
    base.update(changes)
    return StudySettings(**base)  # type: ignore[arg-type]


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("backbone", "mobilenet" if x < 0.5 else "efficientnetb0")
    if x > 0.9:
        raise optuna.TrialPruned()
    return x


def test_create_records_settings_metadata_and_versions(storage) -> None:
    study = create_or_load_study(storage, "s", _settings(), {"n_images": 2400})
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    attrs = study.user_attrs
    assert attrs["objective"] == "accuracy"
    assert attrs["sampler"] == "tpe"
    assert attrs["pruner"] == "hyperband"
    assert attrs["seed"] == 3
    assert attrs["max_resource"] == 12
    assert attrs["space"] == META["space"]
    assert attrs["data_fingerprint"] == "sha256:abc123"
    assert attrs["n_images"] == 2400
    versions = attrs["versions"]
    assert set(versions) == {"python", "blood-automl", "optuna", "tensorflow", "keras", "numpy"}
    assert versions["optuna"] == optuna.__version__
    assert versions == package_versions()
    sampler = study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate is True and sampler._group is True
    assert sampler._constant_liar is True
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)
    assert study.pruner._max_resource == 12


def test_resume_with_the_same_settings_continues(storage) -> None:
    first = create_or_load_study(storage, "s", _settings())
    first.optimize(_objective, n_trials=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StudyVersionWarning)
        again = create_or_load_study(storage, "s", _settings())
    assert len(again.trials) == 4
    again.optimize(_objective, n_trials=2)
    assert len(get_study(storage, "s").trials) == 6
    assert settings_of(again) == _settings()


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"objective": "macro_f1"}, ConfigError, ["objective", '"accuracy"', '"macro_f1"']),
        ({"seed": 4}, ConfigError, ["seed=3", "seed=4", "--seed"]),
        ({"sampler": "random"}, ConfigError, ["sampler"]),
        ({"pruner": "median"}, ConfigError, ["pruner"]),
        ({"metadata": {**META, "space_version": 4}}, ConfigError, ["space_version=3", "--space"]),
        ({"metadata": {**META, "image_size": 128}}, ConfigError, ["image_size=96", "128"]),
        (
            {"metadata": {**META, "data_fingerprint": "sha256:fff"}},
            DataError,
            ["data_fingerprint", "sha256:abc123", "sha256:fff", "--data"],
        ),
        (
            {"metadata": {**META, "space": {**META["space"], "max_epochs": 20}}},
            ConfigError,
            ["space=", "max_epochs", "12", "20"],
        ),
    ],
)
def test_resume_with_other_settings_is_refused(storage, changes, error, words) -> None:
    create_or_load_study(storage, "s", _settings()).optimize(_objective, n_trials=2)
    with pytest.raises(error) as info:
        create_or_load_study(storage, "s", _settings(**changes))
    message = str(info.value)
    assert "\n" not in message
    assert "study 's'" in message and "--study" in message
    for word in words:
        assert word in message
    assert len(get_study(storage, "s").trials) == 2  # nothing changed


def test_new_package_versions_only_warn(storage) -> None:
    study = create_or_load_study(storage, "s", _settings())
    study.set_user_attr("versions", {**package_versions(), "optuna": "4.0.0"})
    with pytest.warns(StudyVersionWarning, match=r"optuna 4\.0\.0 -> "):
        create_or_load_study(storage, "s", _settings())


def test_a_key_the_study_lacks_is_recorded(storage) -> None:
    create_or_load_study(storage, "s", _settings())
    study = create_or_load_study(storage, "s", _settings(), {"recipes": True})
    assert study.user_attrs["recipes"] is True


def test_foreign_and_minimizing_studies_are_refused(storage) -> None:
    plain = optuna.create_study(storage=storage, study_name="plain", direction="maximize")
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ConfigError, match="not made by blood-automl"):
        create_or_load_study(storage, "plain", _settings())
    optuna.create_study(storage=storage, study_name="mini", direction="minimize")
    with pytest.raises(ConfigError, match="minimizes"):
        create_or_load_study(storage, "mini", _settings())


def test_storage_url_string_is_accepted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/u.db"
    create_or_load_study(url, "s", _settings())
    assert [s.name for s in list_studies(url)] == ["s"]


def test_get_study_names_the_existing_ones(storage) -> None:
    with pytest.raises(StorageError, match="none yet"):
        get_study(storage, "nope")
    create_or_load_study(storage, "a", _settings())
    create_or_load_study(storage, "b", _settings())
    with pytest.raises(StorageError) as info:
        get_study(storage, "x")
    assert str(info.value).startswith("study 'x' not found in sqlite:///")
    assert str(info.value).endswith("existing studies: a, b")
    assert get_study(storage, "b").study_name == "b"


def test_get_study_masks_a_password_in_the_message() -> None:
    storage = optuna.storages.RDBStorage("sqlite://")
    storage.url = "postgresql://bob:s3cret@h/d"  # how a server storage would describe itself
    with pytest.raises(StorageError) as info:
        get_study(storage, "x")
    assert "bob:***@h" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_best_trial_and_summaries(storage) -> None:
    study = create_or_load_study(storage, "s", _settings())
    with pytest.raises(StorageError, match="has no completed trial yet; run blood-automl search"):
        best_trial(study)
    for x in [0.2, 0.7, 0.4, 0.95]:
        study.enqueue_trial({"x": x})
    study.optimize(_objective, n_trials=4)
    study.optimize(lambda t: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))
    best = best_trial(study)
    assert best.number == 1 and best.value == pytest.approx(0.7)
    assert best_trial(study, 2).params == {"x": 0.4}
    with pytest.raises(StorageError, match=r"is PRUNED, not COMPLETE.*best is trial 1"):
        best_trial(study, 3)
    with pytest.raises(StorageError, match="has no trial 99"):
        best_trial(study, 99)
    rows = summarize(study, top=2)
    assert [r["number"] for r in rows] == [1, 2]
    assert rows[0]["state"] == "COMPLETE"
    assert rows[0]["params"] == {"x": 0.7}
    assert rows[0]["user_attrs"]["backbone"] == "efficientnetb0"
    assert rows[0]["duration"] >= 0
    assert len(summarize(study)) == 3
    counts = study_counts(study)
    assert counts["complete"] == 3 and counts["pruned"] == 1 and counts["fail"] == 1
    assert counts["finished"] == 5
    (info,) = list_studies(storage)
    assert (info.name, info.n_trials, info.n_finished, info.n_complete) == ("s", 5, 5, 3)
    assert info.best_trial == 1 and info.best_value == pytest.approx(0.7)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="objective must be one of accuracy"):
        StudySettings(objective="auc")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sampler"):
        StudySettings(sampler="cmaes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        StudySettings(seed=-1)
    with pytest.raises(ConfigError, match="max_resource"):
        StudySettings(max_resource=0)
    with pytest.raises(ConfigError, match="JSON"):
        create_or_load_study("sqlite://", "s", StudySettings(metadata={"x": object()}))


def test_samplers_and_pruners() -> None:
    assert isinstance(make_sampler(StudySettings(sampler="random")), optuna.samplers.RandomSampler)
    assert isinstance(make_pruner(StudySettings(pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(StudySettings(pruner="none")), optuna.pruners.NopPruner)
    assert make_pruner(StudySettings())._max_resource == "auto"
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs PyTorch"):
            make_sampler(StudySettings(sampler="gp"))
    else:
        assert isinstance(make_sampler(StudySettings(sampler="gp")), optuna.samplers.GPSampler)


def test_workers_and_resumes_draw_different_seeds() -> None:
    assert sampler_seed(5) == 5
    assert sampler_seed(None, 3, 10) is None
    seeds = {sampler_seed(5, w, n) for w in range(4) for n in (0, 10)}
    assert len(seeds) == 8
    assert sampler_seed(5, 1, 10) == sampler_seed(5, 1, 10)


def test_resumed_study_does_not_repeat_its_startup_trials(storage) -> None:
    settings = _settings(sampler="random")
    create_or_load_study(storage, "s", settings).optimize(_objective, n_trials=3)
    create_or_load_study(storage, "s", settings).optimize(_objective, n_trials=3)
    xs = [t.params["x"] for t in get_study(storage, "s").trials]
    assert len(set(xs)) == 6


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "x" * 129, "sp ace"])
def test_bad_study_names(name: str) -> None:
    with pytest.raises(ConfigError, match="study name"):
        check_study_name(name)


def test_good_study_names() -> None:
    for name in ["blood-automl", "run_2.b", "A1"]:
        assert check_study_name(name) == name
