"""refit-best --top K: the member choice, the shared temperature, and a real ensemble export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from blood_automl.errors import ConfigError
from blood_automl.export.calibration import softmax
from blood_automl.export.ensemble_refit import (
    DIVERSITY_MARGIN,
    Candidate,
    choose_members,
    distinct_ranked,
    fit_shared_temperature,
    soft_vote_nll,
    soft_vote_probs,
)
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


@pytest.mark.slow
def test_refit_best_top_2_exports_one_soft_vote_model(tmp_path: Path) -> None:
    """A real smoke search of 3 trials, ``refit-best --top 2 --tta``, the export in a new process."""
    images, labels = make_images(96, size=96, seed=1)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    search = ["search", "--data", "train.npz", "--study", "e", "--storage", url, "--workers", "1"]
    search += ["--preset", "smoke", "--weights", "none", "--trials", "3", "--no-recipes"]
    done = run_cli(*search, "--no-clean", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    refit = run_cli(
        "refit-best", "--study", "e", "--storage", url, "--top", "2", "--tta", cwd=tmp_path
    )
    assert refit.returncode == 0, refit.stderr[-3000:]
    assert refit.stdout.startswith("ensemble of 2 (soft vote): trial ")
    export = tmp_path / "exports" / "e"
    metrics = json.loads((export / "metrics.json").read_text())
    config = json.loads((export / "config.json").read_text())
    entry = metrics["ensemble"]
    numbers = [m["trial"] for m in entry["members"]]
    assert entry["k"] == 2 and len(set(numbers)) == 2
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

    data_dir = tmp_path / "studies" / "e" / "data"
    if not (data_dir / "manifest.json").is_file():
        data_dir = next(p.parent for p in tmp_path.rglob("manifest.json"))
    check = subprocess.run(
        [sys.executable, "-c", _CHECK, str(export), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["ensemble"] is True and seen["members"] == 2
    assert seen["gap"] < 1e-5
    assert seen["accuracy"] == pytest.approx(metrics["accuracy"])
    assert seen["macro_f1"] == pytest.approx(metrics["macro_f1"])
