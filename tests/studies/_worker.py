"""A worker process for the studies tests: runs, hangs in, or reads a study on a real storage.

Usage: python _worker.py MODE URL STUDY [options]; prints one JSON line on stdout.
  run     work on the study until it has --target finished trials (tiny objective)
  hang    start one trial, write its number to --marker, then sleep until killed
  read    poll the study like a dashboard (plain Optuna storage) until --stop-file exists
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import optuna

from blood_automl.studies import (
    StudySettings,
    create_or_load_study,
    open_storage,
    optimize_to_target,
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["run", "hang", "read"])
    p.add_argument("url")
    p.add_argument("study")
    p.add_argument("--target", type=int, default=10)
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.02)
    p.add_argument("--heartbeat", type=int, default=60)
    p.add_argument("--grace", type=int, default=None)
    p.add_argument("--marker", default=None)
    p.add_argument("--stop-file", default=None)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.mode == "read":
        return read(args)
    t0 = time.monotonic()
    storage = open_storage(args.url, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    study = create_or_load_study(storage, args.study, StudySettings(seed=7), worker=args.worker)

    if args.mode == "hang":

        def hang(trial: optuna.Trial) -> float:
            trial.suggest_float("x", 0.0, 1.0)
            trial.suggest_int("n", 1, 100)
            with open(args.marker, "w") as f:
                f.write(str(trial.number))
            time.sleep(3600)
            return 0.0

        optimize_to_target(study, hang, args.target)  # the real path: claim_slot first
        return 1

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        n = trial.suggest_int("n", 1, 100)
        trial.set_user_attr("pid", os.getpid())
        time.sleep(args.sleep)
        return x + n / 1000

    try:
        ran = optimize_to_target(study, objective, args.target, poll_interval=0.2)
    except Exception as e:
        print(json.dumps({"error": repr(e), "traceback": traceback.format_exc()}))
        return 1
    print(json.dumps({"ran": ran, "seconds": time.monotonic() - t0}))
    return 0


def read(args: argparse.Namespace) -> int:
    """Poll like optuna-dashboard: its own plain RDBStorage, reading all trials again and again."""
    polls, errors, most = 0, [], 0
    storage = None
    while not _has_tables(args.url):  # a dashboard opens a storage that exists
        time.sleep(0.01)
    while not os.path.exists(args.stop_file):
        try:
            if storage is None:
                storage = optuna.storages.RDBStorage(args.url)
            names = [s.study_name for s in storage.get_all_studies()]
            if args.study in names:
                study_id = storage.get_study_id_from_name(args.study)
                most = max(most, len(storage.get_all_trials(study_id, deepcopy=False)))
            polls += 1
        except Exception as e:
            errors.append(repr(e)[:300])
        time.sleep(0.01)
    print(json.dumps({"polls": polls, "errors": errors, "most_trials": most}))
    return 0


def _has_tables(url: str) -> bool:
    import sqlite3

    if not url.startswith("sqlite:///"):
        return True  # a server database: the test created the schema first
    path = url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return False
    con = sqlite3.connect(path, timeout=30)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    return "version_info" in names and "alembic_version" in names


if __name__ == "__main__":
    sys.exit(main())
