"""refit-best --top K: the member choice, the shared temperature, and a real ensemble export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from blood_automl.errors import ConfigError
from blood_automl.export.calibration import softmax
from blood_automl.export.ensemble_refit import (
    DIVERSITY_MARGIN,
    Candidate,
    Trained,
    choose_members,
    distinct_ranked,
    ensemble_entry,
    fit_shared_temperature,
    soft_vote_nll,
    soft_vote_probs,
)
from blood_automl.studies import data_dir as study_data_dir
from conftest import make_images
from search.conftest import run_cli


def _c(number: int, value: float, backbone: str = "a", **params: object) -> Candidate:
    return Candidate(number, value, params or {"n": number}, backbone)


# -- member choice ---------------------------------------------------------------------------


def test_members_are_the_best_first_and_ties_go_to_the_lower_trial_number() -> None:
    found = [_c(5, 0.80), _c(2, 0.90), _c(7, 0.90), _c(1, 0.70)]
    assert [c.number for c in choose_members(found, 3)] == [2, 7, 5]


def test_a_trial_with_the_parameters_of_a_better_one_is_skipped() -> None:
    found = [_c(0, 0.9, lr=1e-3), _c(1, 0.95, lr=1e-3), _c(2, 0.8, lr=2e-3)]
    assert [c.number for c in distinct_ranked(found)] == [1, 2]
    assert [c.number for c in choose_members(found, 2)] == [1, 2]


def test_among_near_equals_a_new_backbone_is_preferred() -> None:
    near = 0.9 - DIVERSITY_MARGIN / 2
    found = [_c(0, 0.9, "mobilenet"), _c(1, 0.9, "mobilenet"), _c(2, near, "efficientnet")]
    assert [c.number for c in choose_members(found, 2)] == [0, 2]
    # once every backbone is in, the best remaining comes next
    assert [c.number for c in choose_members(found, 3)] == [0, 2, 1]


def test_a_new_backbone_beyond_the_margin_is_not_preferred() -> None:
    far = 0.9 - 2 * DIVERSITY_MARGIN
    found = [_c(0, 0.9, "mobilenet"), _c(1, 0.9, "mobilenet"), _c(2, far, "efficientnet")]
    assert [c.number for c in choose_members(found, 2)] == [0, 1]


def test_the_best_trial_is_always_the_first_member() -> None:
    near = 0.9 - DIVERSITY_MARGIN / 2
    found = [_c(3, near, "b"), _c(4, 0.9, "a")]
    assert choose_members(found, 2)[0].number == 4


def test_too_few_distinct_trials_is_one_line_naming_how_many() -> None:
    found = [_c(0, 0.9, lr=1e-3), _c(1, 0.8, lr=1e-3), _c(2, 0.7, lr=5e-4)]
    with pytest.raises(ConfigError) as info:
        choose_members(found, 3, study="study 's'")
    message = str(info.value)
    assert "\n" not in message
    assert "--top 3" in message and "study 's' has 2" in message
    assert "smaller --top" in message and "more trials" in message


# -- the shared temperature --------------------------------------------------------------------


def _over_confident(members: int, n: int = 600, classes: int = 8) -> tuple[list, np.ndarray]:
    """Members' logits that are calibrated at T = 1 times 4: too sure, each in its own way."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.5, size=(n, classes))
    labels = (softmax(base).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    logits = [4.0 * (base + rng.normal(0.0, 0.3, size=base.shape)) for _ in range(members)]
    return logits, labels


def test_shared_temperature_lowers_the_soft_votes_nll_of_over_confident_members() -> None:
    logits, labels = _over_confident(3)
    fitted = fit_shared_temperature(logits, labels)
    assert fitted.temperature > 2.0
    assert fitted.validation_nll_after < fitted.validation_nll_before - 0.1
    assert fitted.validation_ece_after < fitted.validation_ece_before
    for t in (fitted.temperature * 0.8, fitted.temperature * 1.25):
        assert soft_vote_nll(logits, labels, t) > fitted.validation_nll_after


def test_soft_vote_probs_are_the_mean_of_the_members_softmax() -> None:
    logits, _ = _over_confident(2, n=20)
    expected = (softmax(logits[0], 2.0) + softmax(logits[1], 2.0)) / 2
    np.testing.assert_allclose(soft_vote_probs(logits, 2.0), expected, rtol=1e-10)


# -- metrics.json's ensemble entry ------------------------------------------------------------

CLASSES = [f"c{i}" for i in range(8)]


def _trained(number: int, val_logits: np.ndarray | None, test_probs: np.ndarray) -> Trained:
    candidate = Candidate(number, 0.9 - number / 100, {"n": number}, "b")
    plan = SimpleNamespace(candidate=candidate, trial=SimpleNamespace(number=number))
    return Trained(plan, None, [], 1.0, test_probs, None, val_logits, None)  # type: ignore[arg-type]


def test_validation_by_k_is_the_twins_soft_vote_of_the_first_k_members() -> None:
    logits, labels = _over_confident(2, n=200)
    data = SimpleNamespace(y_val=labels, y_test=labels, class_names=CLASSES)
    members = [_trained(i, logits[i], softmax(logits[i])) for i in range(2)]
    entry = ensemble_entry(members, data, "accuracy")  # type: ignore[arg-type]
    first, both = entry["validation_by_k"]
    assert (first["k"], both["k"]) == (1, 2)
    accuracy_1 = float(np.mean(softmax(logits[0]).argmax(axis=1) == labels))
    voted = (softmax(logits[0]) + softmax(logits[1])) / 2
    assert first["accuracy"] == pytest.approx(accuracy_1)
    assert both["accuracy"] == pytest.approx(float(np.mean(voted.argmax(axis=1) == labels)))
    assert both["nll"] == pytest.approx(soft_vote_nll(logits, labels))
    assert [m["trial"] for m in entry["members"]] == [0, 1]
    assert entry["members"][0]["test"]["accuracy"] == pytest.approx(accuracy_1)


def test_without_twins_there_is_no_validation_by_k_but_a_reason() -> None:
    logits, labels = _over_confident(2, n=50)
    data = SimpleNamespace(y_val=labels, y_test=labels, class_names=CLASSES)
    members = [_trained(i, None, softmax(logits[i])) for i in range(2)]
    entry = ensemble_entry(members, data, "accuracy")  # type: ignore[arg-type]
    assert "validation_by_k" not in entry
    assert "--no-calibration" in entry["validation_by_k_absent"]


# -- a real ensemble export ---------------------------------------------------------------------

_CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from blood_automl.data import load_prepared
    from blood_automl.export.ensemble import is_ensemble, members_of
    from blood_automl.trainer import compute_metrics

    export, data_dir = sys.argv[1], sys.argv[2]
    model = keras.saving.load_model(export + "/model.keras")  # safe mode
    data = load_prepared(data_dir)
    x = np.asarray(data.x_test).astype("float32")
    whole = np.asarray(model.predict(x, verbose=0))
    parts = [np.asarray(m.predict(x, verbose=0)) for m in members_of(model)]
    found = compute_metrics(data.y_test, whole, data.class_names)
    print(json.dumps({
        "ensemble": is_ensemble(model),
        "members": len(parts),
        "gap": float(np.abs(whole - np.mean(parts, axis=0)).max()),
        "accuracy": found["accuracy"],
        "macro_f1": found["macro_f1"],
    }))
    """
)


def _add_variant(url: str, study_name: str) -> int:
    """A second completed trial: the searched one with one float parameter moved to a bound.

    Its recorded configuration is left out, so refit rebuilds it from the parameters.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    (trial,) = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    key, dist = next(
        (k, d)
        for k, d in trial.distributions.items()
        if isinstance(d, optuna.distributions.FloatDistribution)
    )
    params = dict(trial.params)
    params[key] = dist.low if params[key] != dist.low else dist.high
    attrs = {k: v for k, v in trial.user_attrs.items() if k != "config"}
    variant = optuna.trial.create_trial(
        params=params,
        distributions=trial.distributions,
        value=float(trial.value or 0.0) - 0.01,
        user_attrs=attrs,
    )
    study.add_trial(variant)
    return len(study.get_trials()) - 1


@pytest.mark.slow
def test_refit_best_top_2_exports_one_soft_vote_model(tmp_path: Path) -> None:
    """A real one-trial smoke search (32x32 images) and a variant of it, ``refit-best --top 2
    --tta``, then the export loaded in safe mode in a new process."""
    images, labels = make_images(64, size=32, seed=1)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = ["search", "--data", "train.npz", "--study", "e", "--storage", url, "--workers", "1"]
    search += ["--preset", "smoke", "--weights", "none", "--trials", "1", "--no-recipes"]
    done = run_cli(*search, "--no-clean", cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    variant = _add_variant(url, "e")

    refit = run_cli(
        *("refit-best", "--study", "e", "--storage", url, "--top", "2", "--tta"),
        cwd=tmp_path,
        timeout=1800,
    )
    assert refit.returncode == 0, refit.stderr[-3000:]
    assert "ensemble of 2 (soft vote): trial " in refit.stdout
    export = tmp_path / "exports" / "e"
    metrics = json.loads((export / "metrics.json").read_text())
    config = json.loads((export / "config.json").read_text())
    entry = metrics["ensemble"]
    numbers = [m["trial"] for m in entry["members"]]
    assert entry["k"] == 2 and numbers == [0, variant]
    assert [m["trial"] for m in config["members"]] == numbers
    assert all({"params", "config", "epochs", "seed"} <= set(m) for m in config["members"])
    assert [r["k"] for r in entry["validation_by_k"]] == [1, 2]
    for row in entry["validation_by_k"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["nll"] > 0.0
        assert set(row["tta"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    assert all(
        set(m["test"]) == {"accuracy", "balanced_accuracy", "macro_f1"} for m in entry["members"]
    )
    assert metrics["calibration"]["method"] == "temperature"
    assert config["temperature"] == metrics["calibration"]["temperature"]
    assert set(metrics["tta"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    card = (export / "MODEL_CARD.md").read_text()
    assert "## Ensemble" in card and f"ensemble of trials {numbers[0]}, {numbers[1]}" in card

    data_dir = study_data_dir(url, "e")
    check = subprocess.run(
        [sys.executable, "-c", _CHECK, str(export), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["ensemble"] is True and seen["members"] == 2
    assert seen["gap"] < 1e-5
    assert seen["accuracy"] == pytest.approx(metrics["accuracy"])
    assert seen["macro_f1"] == pytest.approx(metrics["macro_f1"])
