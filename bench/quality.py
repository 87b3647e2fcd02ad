"""blood-automl's search + refit against KerasTuner Hyperband + retrain, at equal wall-clock budget.

Both tools get the same train / validation / test arrays, the same backbone (MobileNet,
alpha 0.25, 96x96) with the same ImageNet weights file, the same wall-clock budget per seed,
and are scored once on the same test split (accuracy, balanced accuracy, macro-F1).

    .venv/bin/python bench/quality.py                      # 2 seeds, 15 minutes each, side by side
    .venv/bin/python bench/quality.py --quick --seeds 0    # 800 images, 3 minutes: a few minutes
    .venv/bin/python bench/quality.py --sequential --check # all cores each; exit 1 if behind

The parent process never imports TensorFlow: each contestant runs in its own child processes
(blood-automl through its CLI, KerasTuner through this file's ``kerastuner`` role, the scoring
of blood-automl's export through its ``score`` role), and the parent computes the metrics
from the predictions they write.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SELF = str(Path(__file__).resolve())
HERE = Path(SELF).parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pbc_96_small.npz"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights"
WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
SPLIT_SEED = 0
"""Seed of the fixed split (and of the --quick subsample): the same for every run seed."""
FRACTIONS = (0.64, 0.16, 0.20)
QUICK_IMAGES = 800
QUICK_BUDGET_MIN = 3.0
STOP_GRACE_S = 180.0
"""How long a search may take to stop cleanly after SIGINT before it is terminated."""
SPLITS = ("train", "val", "test")
BATCH = 64
TOOLS = ("blood-automl", "KerasTuner")


# --------------------------------------------------------------------------- data and metrics


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = FRACTIONS, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train, val and test indices of ``labels``: stratified, fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(
        idx, test_size=fractions[2], stratify=labels, random_state=seed, shuffle=True
    )
    train, val = train_test_split(
        rest,
        test_size=fractions[1] / (fractions[0] + fractions[1]),
        stratify=labels[rest],
        random_state=seed,
        shuffle=True,
    )
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_subsample(labels: np.ndarray, n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted indices of ``n`` of ``labels`` (all when ``n`` >= their count), stratified."""
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed
    )
    return np.sort(keep)


def metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 (scikit-learn) of predicted class indices."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def _labels(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).reshape(-1).astype(np.int64)


def bench_split(source: dict[str, np.ndarray], quick_images: int | None) -> dict[str, np.ndarray]:
    """The bench's MedMNIST-style arrays from an npz's arrays: its own split, or the fixed one.

    A MedMNIST file (``train_images`` ...) keeps its split; a plain one (``images``,
    ``labels``) is split 64/16/20, stratified, seed 0. With ``quick_images`` a stratified
    subsample of that many images is used (each split of a MedMNIST file in proportion).
    """
    out: dict[str, np.ndarray] = {}
    if "train_images" in source:
        total = sum(len(source[f"{s}_labels"]) for s in SPLITS)
        for s in SPLITS:
            images, labels = np.asarray(source[f"{s}_images"]), _labels(source[f"{s}_labels"])
            if quick_images is not None:
                keep = stratified_subsample(labels, round(quick_images * len(labels) / total))
                images, labels = images[keep], labels[keep]
            out[f"{s}_images"], out[f"{s}_labels"] = images, labels
    else:
        images, labels = np.asarray(source["images"]), _labels(source["labels"])
        if quick_images is not None:
            keep = stratified_subsample(labels, quick_images)
            images, labels = images[keep], labels[keep]
        for s, part in zip(SPLITS, stratified_split(labels), strict=True):
            out[f"{s}_images"], out[f"{s}_labels"] = images[part], labels[part]
    n_classes = int(max(out[f"{s}_labels"].max() for s in SPLITS)) + 1
    names = source.get("class_names")
    out["class_names"] = (
        np.asarray(names).astype(str)
        if names is not None
        else np.array([str(c) for c in range(n_classes)])
    )
    return out


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz (no pickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# --------------------------------------------------------------------------- child roles (TF)


def _threads_from_env() -> None:
    """Cap TensorFlow's threads as the parent asked (``BENCH_THREADS``), before any op runs."""
    import tensorflow as tf

    threads = int(os.environ.get("BENCH_THREADS", "0"))
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def role_score(model_path: str, split_path: str, out: str) -> None:
    """Load an exported model.keras (safe mode) and write its test predictions as JSON."""
    _threads_from_env()
    import keras

    data = load_npz(Path(split_path))
    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    start = time.time()
    probs = model.predict(data["test_images"], batch_size=BATCH, verbose=0)
    Path(out).write_text(
        json.dumps({"y_pred": np.argmax(probs, axis=1).tolist(), "predict_s": time.time() - start})
    )


def build_kt_model(hp: Any, weights_file: str, n_classes: int) -> Any:
    """The KerasTuner hypermodel: MobileNet-0.25 (all trainable) + searched head, Adam."""
    import keras

    inputs = keras.Input((96, 96, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(96, 96, 3)
    )
    backbone.load_weights(weights_file)
    backbone.trainable = True
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(
        hp.Int("units", 64, 512, step=64),
        activation=hp.Choice("activation", ["relu", "swish", "selu"]),
    )(x)
    x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5))(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    lr = hp.Float("learning_rate", 1e-4, 3e-3, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def role_kerastuner(args: argparse.Namespace) -> None:
    """Hyperband search until the deadline, retrain the best on train + val, predict the test set."""
    _threads_from_env()
    import keras
    import keras_tuner

    keras.utils.set_random_seed(args.seed)
    data = load_npz(Path(args.split))
    n_classes = len(data["class_names"])
    x = {s: data[f"{s}_images"].astype("float32") for s in SPLITS}
    y = {s: data[f"{s}_labels"] for s in SPLITS}
    deadline = float(args.deadline)
    cut_short: list[str] = []

    class DeadlineHit(keras_tuner.errors.FailedTrialError):
        """The deadline passed while a trial trained: the trial is failed, not scored."""

    class Deadline(keras.callbacks.Callback):
        """Ends training before the first batch (or epoch) that would start after the deadline.

        It raises rather than setting ``stop_training``, so a cut trial spends no more time
        (no step, no validation pass) and reports no partial score.
        """

        def _check(self) -> None:
            if time.time() >= deadline:
                raise DeadlineHit("cut short by the deadline")

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._check()

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._check()

    class TimedHyperband(keras_tuner.Hyperband):
        """Hyperband that starts no trial after the deadline and fails a trial it cut short."""

        def run_trial(self, trial: Any, *fit_args: Any, **fit_kwargs: Any) -> Any:
            try:
                return super().run_trial(trial, *fit_args, **fit_kwargs)
            except DeadlineHit:
                cut_short.append(trial.trial_id)
                raise

        def _configure_tensorboard_dir(
            self, callbacks: Any, trial: Any, execution: int = 0
        ) -> None:
            """No TensorBoard callback here, so nothing to configure (and no tensorboard import)."""

        def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
            from keras_tuner.src.engine import trial as trial_module

            self.on_search_begin()
            while time.time() < deadline:
                self.pre_create_trial()
                trial = self.oracle.create_trial(self.tuner_id)
                if trial.status == trial_module.TrialStatus.STOPPED:
                    break
                if trial.status == trial_module.TrialStatus.IDLE:
                    continue
                self.on_trial_begin(trial)
                self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
                self.on_trial_end(trial)
            self.on_search_end()

    weights_file = str(Path(args.weights) / WEIGHTS_FILE)
    tuner = TimedHyperband(
        hypermodel=lambda hp: build_kt_model(hp, weights_file, n_classes),
        objective="val_accuracy",
        max_epochs=9,
        factor=3,
        hyperband_iterations=10**6,  # keep going until the deadline ends the search
        seed=args.seed,
        directory=args.work,
        project_name="kerastuner",
        overwrite=True,
    )
    started = float(args.started)
    tuner.search(
        x["train"],
        y["train"],
        validation_data=(x["val"], y["val"]),
        batch_size=BATCH,
        callbacks=[Deadline()],
        verbose=0,
    )
    search_s = time.time() - started
    trials = list(tuner.oracle.trials.values())
    completed = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
    result: dict[str, Any] = {
        "search_s": search_s,
        "trials_completed": len(completed),
        "trials_cut_short": len(cut_short),
        "trials_failed": sum(
            t.status in ("FAILED", "INVALID") and t.trial_id not in cut_short for t in trials
        ),
    }
    if completed:
        best = max(completed, key=lambda t: t.score)
        hp = best.hyperparameters
        epochs = int(hp.values.get("tuner/epochs", 9))
        keras.utils.set_random_seed(args.seed)
        start = time.time()
        model = build_kt_model(hp, weights_file, n_classes)
        model.fit(
            np.concatenate([x["train"], x["val"]]),
            np.concatenate([y["train"], y["val"]]),
            batch_size=BATCH,
            epochs=epochs,
            shuffle=True,
            verbose=0,
        )
        probs = model.predict(x["test"], batch_size=BATCH, verbose=0)
        result |= {
            "refit_s": time.time() - start,
            "best_val_accuracy": float(best.score),
            "best_params": {k: v for k, v in hp.values.items()},
            "refit_epochs": epochs,
            "y_pred": np.argmax(probs, axis=1).tolist(),
        }
    Path(args.out).write_text(json.dumps(result, default=str))


# --------------------------------------------------------------------------- the parent


@dataclass
class Result:
    """One tool's figures for one seed."""

    tool: str
    seed: int
    trials: int | None = None
    search_min: float | None = None
    refit_min: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Placement:
    """Where a contestant's processes run: CPU cores and TensorFlow thread cap (0: default)."""

    cores: set[int] | None
    threads: int


def child_env(place: Placement) -> dict[str, str]:
    """The environment of a contestant's processes: quiet TF, thread caps in parallel mode."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if place.threads:
        n = str(place.threads)
        for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            env[key] = n
        env["NUMBA_NUM_THREADS"] = n
        env["BENCH_THREADS"] = n
    return env


def popen(
    argv: list[str], place: Placement, log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` on ``place``'s cores (inherited by its children), output to ``log``."""
    cores = place.cores

    def pin() -> None:
        if cores:
            os.sched_setaffinity(0, cores)

    with open(log, "ab") as f:
        return subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=child_env(place),
            cwd=cwd,
            preexec_fn=pin,
        )


def wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for ``proc`` until ``deadline`` (time.time()); True when it ended by then."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.time()))
        return True
    except subprocess.TimeoutExpired:
        return False


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGINT (a clean stop), then SIGTERM and SIGKILL if it does not end; the exit code."""
    for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 30.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


SPACE_FILE = (
    'base = "cpu"\nname = "bench-mobilenet-025"\n\n[params.backbone]\nvalue = "MobileNet-0.25"\n'
)


def optuna_counts(db: Path, study: str) -> dict[str, int]:
    """Trials per state of a finished blood-automl study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").get_trials(
        deepcopy=False
    )
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def run_blood_automl(
    seed: int, split: Path, weights: Path, budget_s: float, place: Placement, work: Path
) -> tuple[Result, list[int] | None]:
    """Search until the budget is spent (SIGINT), refit the best, predict the test split."""
    res = Result("blood-automl", seed)
    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.toml"
    space.write_text(SPACE_FILE)
    db, study, log = work / "study.db", "bench", work / "blood-automl.log"
    started = time.time()
    proc = popen(
        [
            sys.executable, "-m", "blood_automl", "search",
            "--data", str(split), "--space", str(space), "--weights", str(weights),
            "--seed", str(seed), "--storage", f"sqlite:///{db}", "--study", study,
            "--trials", "10000",
        ],
        place, log, cwd=work,
    )  # fmt: skip
    ended = wait_until(proc, started + budget_s)
    rc = proc.returncode if ended else stop(proc)
    res.search_min = (time.time() - started) / 60
    res.detail["search_exit_code"] = rc
    res.detail["stopped_by_budget"] = not ended
    if rc not in (0, 130):
        res.error = f"search exited with {rc}; see {log}"
        return res, None
    counts = optuna_counts(db, study) if db.exists() else {}
    res.detail["trial_states"] = counts
    res.trials = counts.get("complete", 0) + counts.get("pruned", 0)
    if not counts.get("complete"):
        res.error = "no trial completed within the budget"
        return res, None
    export = work / "export"
    start = time.time()
    refit = popen(
        [
            sys.executable, "-m", "blood_automl", "refit-best",
            "--storage", f"sqlite:///{db}", "--study", study, "--out", str(export),
        ],
        place, log, cwd=work,
    )  # fmt: skip
    if refit.wait() != 0:
        res.error = f"refit-best exited with {refit.returncode}; see {log}"
        return res, None
    res.refit_min = (time.time() - start) / 60
    config = export / "config.json"
    if config.exists():
        res.detail["best_params"] = json.loads(config.read_text()).get("params")
    preds = work / "predictions.json"
    scorer = popen(
        [sys.executable, SELF, "score", str(export / "model.keras"), str(split), str(preds)],
        place, log, cwd=work,
    )  # fmt: skip
    if scorer.wait() != 0:
        res.error = f"scoring the export failed; see {log}"
        return res, None
    return res, json.loads(preds.read_text())["y_pred"]


def run_kerastuner(
    seed: int, split: Path, weights: Path, budget_s: float, place: Placement, work: Path
) -> tuple[Result, list[int] | None]:
    """Hyperband until the budget is spent, retrain the best, predict the test split."""
    res = Result("KerasTuner", seed)
    work.mkdir(parents=True, exist_ok=True)
    out, log = work / "kerastuner.json", work / "kerastuner.log"
    started = time.time()
    proc = popen(
        [
            sys.executable, SELF, "kerastuner", "--split", str(split),
            "--weights", str(weights), "--seed", str(seed), "--work", str(work),
            "--out", str(out), "--started", repr(started),
            "--deadline", repr(started + budget_s),
        ],
        place, log, cwd=work,
    )  # fmt: skip
    if proc.wait() != 0 or not out.exists():
        res.error = f"the KerasTuner run exited with {proc.returncode}; see {log}"
        return res, None
    found = json.loads(out.read_text())
    res.search_min = found["search_s"] / 60
    res.trials = found["trials_completed"]
    res.detail = {k: v for k, v in found.items() if k not in ("y_pred", "search_s", "refit_s")}
    if "y_pred" not in found:
        res.error = "no trial completed within the budget"
        return res, None
    res.refit_min = found["refit_s"] / 60
    return res, found["y_pred"]


Runner = Callable[[int, Path, Path, float, Placement, Path], tuple[Result, list[int] | None]]
RUNNERS: dict[str, Runner] = {"blood-automl": run_blood_automl, "KerasTuner": run_kerastuner}


def placements(parallel: bool, seed_index: int) -> dict[str, Placement]:
    """Each tool's cores: one core each in parallel (swapped every other seed), else all."""
    cores = sorted(os.sched_getaffinity(0))
    if not parallel:
        return {tool: Placement(None, 0) for tool in TOOLS}
    a, b = cores[0], cores[1]
    if seed_index % 2:
        a, b = b, a
    return {"blood-automl": Placement({a}, 1), "KerasTuner": Placement({b}, 1)}


def run_seed(
    seed: int, index: int, split: Path, args: argparse.Namespace, work: Path
) -> list[Result]:
    """Both tools on one seed, side by side or one after the other; scored on the test split."""
    y_test = load_npz(split)["test_labels"].tolist()
    place = placements(args.parallel, index)
    budget_s = args.budget_min * 60
    results: dict[str, Result] = {}

    def one(tool: str) -> None:
        try:
            res, y_pred = RUNNERS[tool](
                seed, split, args.weights, budget_s, place[tool], work / f"seed-{seed}" / tool
            )
        except Exception as exc:  # report it in the table, keep the other contestant
            res, y_pred = Result(tool, seed, error=f"{type(exc).__name__}: {exc}"), None
        if y_pred is not None:
            res.scores = metrics(y_test, y_pred)
        cores = place[tool].cores
        res.detail["cores"] = sorted(cores) if cores else "all"
        results[tool] = res
        print(
            f"seed {seed}: {tool} done: {res.trials} trials, search {_fmt(res.search_min, '.1f')} "
            f"min, refit {_fmt(res.refit_min, '.1f')} min"
            + (f", test accuracy {res.scores['accuracy']:.4f}" if res.scores else "")
            + (f"; {res.error}" if res.error else ""),
            flush=True,
        )

    order = list(TOOLS) if index % 2 == 0 else list(reversed(TOOLS))
    if args.parallel:
        # daemon: Ctrl-C ends the bench; the tools' processes get the same SIGINT and stop
        threads = [threading.Thread(target=one, args=(tool,), daemon=True) for tool in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for tool in order:
            one(tool)
    return [results[tool] for tool in TOOLS]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[Result]) -> str:
    """The per-seed rows as a Markdown table."""
    lines = [
        "| seed | tool | trials finished | test accuracy | balanced accuracy | macro-F1 "
        "| search min | refit min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s = r.scores
        lines.append(
            f"| {r.seed} | {r.tool} | {r.trials if r.trials is not None else '-'} "
            f"| {_fmt(s.get('accuracy'), '.4f')} | {_fmt(s.get('balanced_accuracy'), '.4f')} "
            f"| {_fmt(s.get('macro_f1'), '.4f')} | {_fmt(r.search_min, '.1f')} "
            f"| {_fmt(r.refit_min, '.1f')} |" + (f" error: {r.error}" if r.error else "")
        )
    return "\n".join(lines)


def differences(results: Sequence[Result]) -> dict[str, Any]:
    """blood-automl minus KerasTuner per seed and metric, and the mean over seeds."""
    by_seed: dict[int, dict[str, Result]] = {}
    for r in results:
        by_seed.setdefault(r.seed, {})[r.tool] = r
    per_seed: dict[str, dict[str, float | None]] = {}
    for seed, pair in sorted(by_seed.items()):
        ours, theirs = pair.get("blood-automl"), pair.get("KerasTuner")
        per_seed[str(seed)] = {
            m: (
                ours.scores[m] - theirs.scores[m]
                if ours and theirs and m in ours.scores and m in theirs.scores
                else None
            )
            for m in ("accuracy", "balanced_accuracy", "macro_f1")
        }
    mean: dict[str, float | None] = {}
    for m in ("accuracy", "balanced_accuracy", "macro_f1"):
        values = [v for d in per_seed.values() if (v := d[m]) is not None]
        mean[m] = float(np.mean(values)) if values and len(values) == len(per_seed) else None
    return {"per_seed": per_seed, "mean": mean}


def behind(diff: dict[str, Any]) -> bool:
    """True when blood-automl's test accuracy is below KerasTuner's (or missing) on any seed."""
    return any(d["accuracy"] is None or d["accuracy"] < 0 for d in diff["per_seed"].values())


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, int]]:
    """Write the bench's MedMNIST-style split into ``work``; its path and split sizes."""
    arrays = bench_split(load_npz(args.data), QUICK_IMAGES if args.quick else None)
    split = work / "split.npz"
    np.savez(split, **arrays)  # type: ignore[arg-type]
    return split, {s: len(arrays[f"{s}_labels"]) for s in SPLITS}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="blood-automl search + refit against KerasTuner Hyperband + retrain, "
        "same data, backbone, weights and wall-clock budget, scored on the same test split."
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="npz (plain or MedMNIST)")
    p.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"folder with {WEIGHTS_FILE}"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--budget-min", type=float, default=None, help="per tool and seed (15)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES} images, 3 minutes")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--parallel", dest="parallel", action="store_true", default=True,
                      help="both tools at once, one core and one TF thread each (default)")  # fmt: skip
    mode.add_argument("--sequential", dest="parallel", action="store_false",
                      help="one tool after the other, all cores each")  # fmt: skip
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="new or empty output folder (default: a new one under bench/.quality/)",
    )
    p.add_argument(
        "--check", action="store_true", help="exit 1 when blood-automl is behind on a seed"
    )
    args = p.parse_args(argv)
    args.data, args.weights = args.data.resolve(), args.weights.resolve()
    args.work = args.work.resolve() if args.work is not None else None
    if args.budget_min is None:
        args.budget_min = QUICK_BUDGET_MIN if args.quick else 15.0
    problems = []
    if not args.data.is_file():
        problems.append(f"--data {args.data} is not a file; give an npz")
    if not (args.weights / WEIGHTS_FILE).is_file():
        problems.append(f"--weights {args.weights} holds no {WEIGHTS_FILE}; give its folder")
    bad_seeds = [s for s in args.seeds if not 0 <= s <= 2**32 - 1]
    if bad_seeds or len(set(args.seeds)) != len(args.seeds):
        problems.append(f"--seeds {args.seeds} must be distinct integers in [0, 2**32 - 1]")
    if args.budget_min <= 0:
        problems.append(f"--budget-min {args.budget_min} must be positive")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        problems.append(
            f"--work {args.work} is not empty (a study there would be resumed); give a new folder"
        )
    if args.parallel and len(os.sched_getaffinity(0)) < 2:
        problems.append("--parallel needs 2 cores; use --sequential")
    if problems:
        p.exit(1, "error: " + "; ".join(problems) + "\n")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.work is None:
        (HERE / ".quality").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=HERE / ".quality"))
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    mode = (
        "parallel: both tools at once, each pinned to one core, TensorFlow threads = 1"
        if args.parallel
        else "sequential: one tool after the other, all cores each"
    )
    print(f"mode: {mode}; cores here: {sorted(os.sched_getaffinity(0))}")
    print(f"load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    split, sizes = prepare(args, work)
    print(f"data: {args.data} -> {split} {sizes}; budget {args.budget_min:g} min per tool and seed")
    results: list[Result] = []
    for index, seed in enumerate(args.seeds):
        print(f"seed {seed}: running ...", flush=True)
        results += run_seed(seed, index, split, args, work)
    diff = differences(results)
    load_end = os.getloadavg()
    print(f"load average at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_end)}")
    print(table(results))
    print("\nblood-automl - KerasTuner (test):")
    for seed, d in diff["per_seed"].items():
        print(f"  seed {seed}: " + ", ".join(f"{m} {_fmt(v, '+.4f')}" for m, v in d.items()))
    print("  mean:   " + ", ".join(f"{m} {_fmt(v, '+.4f')}" for m, v in diff["mean"].items()))
    report = {
        "data": str(args.data),
        "split": str(split),
        "split_sizes": sizes,
        "quick": args.quick,
        "budget_min": args.budget_min,
        "mode": "parallel" if args.parallel else "sequential",
        "load_average_at_start": load,
        "load_average_at_end": load_end,
        "seeds": args.seeds,
        "results": [asdict(r) for r in results],
        "difference": diff,
    }
    out = work / "quality.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nall figures: {out}")
    return 1 if args.check and behind(diff) else 0


def child(argv: Sequence[str]) -> None:
    """The ``score`` and ``kerastuner`` roles, run by the parent in their own processes."""
    if argv[0] == "score":
        role_score(*argv[1:4])
        return
    p = argparse.ArgumentParser()
    for name in ("split", "weights", "work", "out", "started", "deadline"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True)
    role_kerastuner(p.parse_args(argv[1:]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("score", "kerastuner"):
        child(sys.argv[1:])
    else:
        try:
            sys.exit(main())
        except KeyboardInterrupt:
            print("interrupted: no figures written", file=sys.stderr)
            sys.exit(130)
