"""The stored attributes of studies and trials: their keys, their records, and old stores."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from blood_automl.studies import records
from blood_automl.studies.budget import counted
from blood_automl.studies.records import (
    RefitRecord,
    StudyRecord,
    TrialRecord,
    WorkerRecord,
    refit_attr,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "blood_automl"

#: Every key as stores written so far hold it: a renamed key would orphan their attributes.
KEYS = {
    "BACKBONE_ATTR": "backbone",
    "CONFIG_ATTR": "config",
    "SEED_ATTR": "seed",
    "VAL_METRICS_ATTR": "val_metrics",
    "HISTORY_ATTR": "history",
    "EPOCHS_ATTR": "epochs",
    "BEST_STEP_ATTR": "best_step",
    "UNFREEZE_FROM_ATTR": "unfreeze_from",
    "TRAIN_SECONDS_ATTR": "train_seconds",
    "FAIL_REASON_ATTR": "fail_reason",
    "INTERRUPTED_ATTR": "interrupted",
    "SURPLUS_ATTR": "surplus",
    "WARNINGS_ATTR": "warnings",
    "STOP_AFTER_ATTR": "stop_after",
    "RECIPE_ATTR": "recipe",
    "LOG_ATTR": "log",
    "WORKER_PID_ATTR": "worker_pid",
    "WORKER_TRIALS_ATTR": "worker_trials",
    "WORKER_RSS_ATTR": "worker_rss_mib",
    "WORKER_SECONDS_ATTR": "worker_seconds",
    "OBJECTIVE_ATTR": "objective",
    "SAMPLER_ATTR": "sampler",
    "PRUNER_ATTR": "pruner",
    "MAX_RESOURCE_ATTR": "max_resource",
    "SPACE_ATTR": "space",
    "SPACE_NAME_ATTR": "space_name",
    "SPACE_VERSION_ATTR": "space_version",
    "PRESET_ATTR": "preset",
    "DATA_FINGERPRINT_ATTR": "data_fingerprint",
    "SPLIT_ATTR": "split",
    "DATA_SOURCE_ATTR": "data_source",
    "N_IMAGES_ATTR": "n_images",
    "IMAGE_SIZE_ATTR": "image_size",
    "WEIGHTS_ATTR": "weights",
    "CLASS_NAMES_ATTR": "class_names",
    "CREATED_WITH_ATTR": "created_with",
    "VERSIONS_ATTR": "versions",
    "REFIT_ATTR": "refit",
}

HISTORY = [
    {"step": 1, "phase": "head", "loss": 1.9, "val_accuracy": 0.41},
    {"step": 2, "phase": "finetune", "loss": 1.2, "val_accuracy": 0.63},
]
FULL_TRIAL = TrialRecord(
    backbone="MobileNetV3Small",
    config={"backbone": "MobileNetV3Small", "head_lr": 0.001, "head_epochs": 3},
    seed=1_000_004,
    val_metrics={"accuracy": 0.63, "macro_f1": 0.6, "per_class": {"basophil": {"f1": 0.5}}},
    history=HISTORY,
    epochs=(1, 1),
    best_step=2,
    unfreeze_from="expanded_conv_6/project",
    train_seconds=12.3,
    fail_reason=None,
    warnings=("figures not written: disk full",),
    stop_after="its figures could not be written (disk full)",
    recipe="default",
    log="/tmp/logs/trial-0.log",
    worker=WorkerRecord(pid=4242, trials=3, rss_mib=812.5, seconds=14.07),
)
FULL_STUDY = StudyRecord(
    objective="macro_f1",
    sampler="random",
    pruner="median",
    seed=3,
    max_resource=12,
    space={"name": "smoke", "version": "smoke-3", "schema": 2, "params": {}},
    space_name="smoke",
    space_version="smoke-3",
    data_fingerprint="sha256:abc123",
    image_size=96,
    weights="none",
    class_names=["basophil", "eosinophil"],
    created_with="blood-automl",
    versions={"python": "3.11.9", "optuna": "5.0.0", "tensorflow": None},
    refits={
        0: RefitRecord(0.91, 0.9, 0.89, "exports/a", "2026-01-01T00:00:00+00:00"),
        7: RefitRecord(0.93, 0.92, 0.9, "exports/b", "2026-01-02T00:00:00+00:00"),
    },
)


def _study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


# --- keys ----------------------------------------------------------------------------------


def test_every_key_keeps_the_string_stores_hold() -> None:
    named = {name: getattr(records, name) for name in dir(records) if name.endswith("_ATTR")}
    assert named == KEYS
    assert refit_attr(12) == "refit_trial_12"
    assert records.CREATED_WITH == "blood-automl"
    assert {"interrupted", "fail_reason"} == records.OUTCOME_ATTRS
    assert records.SETTINGS_ATTRS == ("objective", "sampler", "pruner", "seed", "max_resource")


def test_the_groups_written_together_have_their_keys() -> None:
    assert list(FULL_TRIAL.started_attrs()) == ["backbone", "config", "seed"]
    assert list(FULL_TRIAL.trained_attrs()) == [
        "val_metrics", "history", "epochs", "best_step", "unfreeze_from", "train_seconds",
    ]  # fmt: skip
    assert list(FULL_TRIAL.worker.to_user_attrs()) == [  # type: ignore[union-attr]
        "worker_pid", "worker_trials", "worker_rss_mib", "worker_seconds",
    ]  # fmt: skip
    assert list(FULL_STUDY.search_attrs()) == [
        "space_name", "space_version", "data_fingerprint", "image_size", "weights", "class_names",
    ]  # fmt: skip
    assert set(RefitRecord().to_value()) == {
        "test_accuracy", "test_balanced_accuracy", "test_macro_f1", "out", "created",
    }  # fmt: skip


# --- round trips through a real study ------------------------------------------------------


def test_a_trial_record_comes_back_from_a_stored_trial() -> None:
    study = _study()
    trial = study.ask()
    for key, value in FULL_TRIAL.to_user_attrs().items():
        trial.set_user_attr(key, value)
    assert TrialRecord.from_trial(trial) == FULL_TRIAL  # the live trial
    study.tell(trial, 0.63)
    frozen = study.trials[0]
    assert TrialRecord.from_trial(frozen) == FULL_TRIAL
    assert frozen.user_attrs["epochs"] == [1, 1]  # stored as the search always stored it
    assert frozen.user_attrs["warnings"] == ["figures not written: disk full"]


def test_a_study_record_comes_back_from_a_stored_study() -> None:
    study = _study()
    for key, value in FULL_STUDY.to_user_attrs().items():
        study.set_user_attr(key, value)
    assert StudyRecord.from_study(study) == FULL_STUDY
    assert study.user_attrs["refit_trial_7"]["out"] == "exports/b"


def test_the_trained_attrs_store_none_values_as_the_objective_always_did() -> None:
    record = TrialRecord(val_metrics={"accuracy": 0.5}, history=HISTORY, epochs=(2, 0))
    attrs = record.trained_attrs()
    assert attrs["best_step"] is None and attrs["unfreeze_from"] is None
    assert attrs["epochs"] == [2, 0]
    study = _study()
    trial = study.ask()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.5)
    stored = study.trials[0].user_attrs
    assert "best_step" in stored and stored["best_step"] is None
    assert TrialRecord.from_trial(study.trials[0]) == record


def test_markers_are_stored_only_when_set_so_the_trial_still_counts() -> None:
    study = _study()
    for record in (
        TrialRecord(backbone="ResNet50"),
        TrialRecord(backbone="ResNet50", surplus="not run: the study already has its 1 trials"),
        TrialRecord(backbone="ResNet50", interrupted="stopped by SIGINT or SIGTERM"),
    ):
        trial = study.ask()
        for key, value in record.to_user_attrs().items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)
    trials = study.get_trials()
    assert "interrupted" not in trials[0].user_attrs and "surplus" not in trials[0].user_attrs
    assert [t.number for t in counted(trials)] == [0]
    assert [TrialRecord.from_trial(t).counted for t in trials] == [True, False, False]


# --- what older stores hold ----------------------------------------------------------------


def test_missing_trial_attributes_read_as_the_readers_always_read_them() -> None:
    empty = TrialRecord.from_user_attrs({})
    assert empty == TrialRecord()
    assert empty.seed == 0  # refit trains with seed 0
    assert empty.epochs is None  # refit falls back to the configuration's epochs
    assert empty.config is None  # refit then skips the check against the recorded config
    assert (empty.history, empty.warnings, empty.worker) == ([], (), None)
    assert empty.counted
    assert TrialRecord.from_user_attrs({"epochs": []}).epochs is None  # as `or` did


def test_a_trial_as_an_earlier_version_wrote_it_reads_back() -> None:
    attrs = {
        "backbone": "EfficientNetB0",
        "config": {"backbone": "EfficientNetB0", "dense_width": 64},
        "seed": 17,
        "epochs": [4, 2],
        "history": HISTORY,
        "fail_reason": "ValueError: bad shape",
        "worker_pid": 9,
        "worker_trials": 1,
        "worker_rss_mib": 700.0,
        "worker_seconds": 3.5,
        "something_new": 1,
    }
    record = TrialRecord.from_user_attrs(attrs)
    assert (record.seed, record.epochs, record.backbone) == (17, (4, 2), "EfficientNetB0")
    assert record.config == attrs["config"] and record.history == HISTORY
    assert record.fail_reason == "ValueError: bad shape"
    assert record.worker == WorkerRecord(pid=9, trials=1, rss_mib=700.0, seconds=3.5)


def test_missing_study_attributes_read_as_the_readers_always_read_them() -> None:
    empty = StudyRecord.from_user_attrs({})
    assert empty == StudyRecord()
    assert empty.weights == "imagenet"  # the first studies stored no weights mode
    assert empty.objective is None and empty.space is None and empty.data_fingerprint is None
    assert empty.refits == {}
    assert StudyRecord().to_user_attrs() == {"weights": "imagenet"}


def test_refit_attributes_of_other_forms_are_passed_over() -> None:
    attrs = {"refit_trial_2": {"out": "exports/x"}, "refit_trial_x": {}, "refit_trial_3": "odd"}
    refits = StudyRecord.from_user_attrs(attrs).refits
    assert refits == {2: RefitRecord(out="exports/x")}


# --- no key spelled out elsewhere ----------------------------------------------------------


def _is_user_attrs(node: ast.AST) -> bool:
    """``x.user_attrs``, ``row["user_attrs"]`` or ``row.get("user_attrs", ...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "user_attrs"
    if isinstance(node, ast.Subscript):
        return _is_text(node.slice, "user_attrs")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and bool(node.args) and _is_text(node.args[0], "user_attrs")
    return False


def _is_text(node: ast.AST, value: str | None = None) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    return value is None or node.value == value


def _literal_keys(source: str) -> list[tuple[int, str]]:
    """(line, code) of every user attribute written or read under a key spelled out."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, args = node.func.attr, node.args
            if name == "set_user_attr":
                hit = bool(args) and _is_text(args[0])
            elif name == "set_trial_user_attr":
                hit = len(args) > 1 and _is_text(args[1])
            elif name == "get":
                hit = bool(args) and _is_text(args[0]) and _is_user_attrs(node.func.value)
            for keyword in node.keywords:
                if keyword.arg == "user_attrs" and isinstance(keyword.value, ast.Dict):
                    hit |= any(k is not None and _is_text(k) for k in keyword.value.keys)
        elif isinstance(node, ast.Subscript):
            hit = _is_user_attrs(node.value) and _is_text(node.slice)
        elif isinstance(node, ast.Compare):
            ins = all(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            hit = ins and _is_text(node.left) and _is_user_attrs(node.comparators[0])
        if hit:
            found.append((getattr(node, "lineno", 0), ast.unparse(node)))
    return found


def test_the_check_finds_keys_spelled_out() -> None:
    source = "\n".join(
        [
            'trial.set_user_attr("seed", 1)',
            'storage.set_trial_user_attr(trial_id, "log", path)',
            'trial.user_attrs.get("config")',
            'row["user_attrs"].get("backbone", "?")',
            'row.get("user_attrs", {}).get("epochs")',
            'study.user_attrs["space"]',
            '"surplus" in trial.user_attrs',
            'study.enqueue_trial(params, user_attrs={"recipe": name})',
            "trial.set_user_attr(SEED_ATTR, 1)",
            "trial.user_attrs.get(CONFIG_ATTR)",
            'options.get("seed")',
        ]
    )
    assert sorted(line for line, _ in _literal_keys(source)) == list(range(1, 9))


def test_no_module_but_records_spells_out_a_stored_key() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line}: {code}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "records.py"
        for line, code in _literal_keys(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "name these keys in studies/records.py:\n" + "\n".join(found)


@pytest.mark.parametrize("key", sorted(KEYS.values()))
def test_records_is_the_only_module_that_names_a_key(key: str) -> None:
    """``KEY_ATTR = "key"`` appears once, in records.py."""
    assignments = [
        path.relative_to(SRC)
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign)
        and _is_text(node.value, key)
        and any(isinstance(t, ast.Name) and t.id.endswith(("_ATTR", "_KEY")) for t in node.targets)
    ]
    assert assignments == [Path("studies/records.py")]
