"""Each private or undocumented part of Optuna, Keras and optuna-dashboard, checked on the installed one.

blood-automl reaches these only through ``studies.optuna_private``, ``studies.dashboard_notes``,
``studies.artifacts.upload_png``, ``analysis.dashboard_server`` and ``trainer.keras_private``.
One test per function: a library upgrade that moves what a function touches fails that test.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
import warnings
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import (
    InMemoryStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
    fail_stale_trials,
)
from optuna.trial import TrialState

from blood_automl.analysis.dashboard import StudiesArtifactStore
from blood_automl.analysis.dashboard_server import dashboard_app, serve_app
from blood_automl.studies import optuna_private as private
from blood_automl.studies.artifacts import artifact_store_for, upload_png
from blood_automl.studies.dashboard_notes import read_note, write_note

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
X = {"x": FloatDistribution(0.0, 1.0)}
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
    b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _rdb(tmp_path: Path, name: str = "optuna", **kwargs: Any) -> RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(f"sqlite:///{tmp_path}/{name}.db", **kwargs)


def _heartbeat_rdb(tmp_path: Path) -> RDBStorage:
    return _rdb(tmp_path, heartbeat_interval=1, grace_period=1)


def _id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """A trial's storage id through public storage methods (the tests of other functions)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _cached(storage: RDBStorage) -> optuna.storages.BaseStorage:
    """The storage as a study holds it: Optuna's cache around an RDB storage."""
    return optuna.storages.get_storage(storage)


# --- Optuna: studies/optuna_private.py ------------------------------------------------------


def test_storage_of_is_the_storage_the_study_writes_through(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    study = optuna.create_study(storage=rdb, study_name="s")
    storage = private.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_study_id_from_name("s") == rdb.get_study_id_from_name("s")
    trial = study.ask()
    storage.set_trial_state_values(_id(rdb, study, trial.number), TrialState.FAIL)
    assert study.trials[0].state == TrialState.FAIL


def test_trial_id_is_the_storage_id_of_live_and_frozen_trials(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    first = optuna.create_study(storage=rdb, study_name="first")
    first.ask()
    first.ask()
    second = optuna.create_study(storage=rdb, study_name="second")
    live = second.ask()  # number 0 in its study, the third trial of the storage
    frozen = second.trials[0]
    assert live.number == frozen.number == 0
    assert private.trial_id(live) == private.trial_id(frozen)
    assert private.trial_id(live) not in {private.trial_id(t) for t in first.trials}
    assert rdb.get_trial(private.trial_id(live)).number == 0
    assert rdb.get_trial_number_from_id(private.trial_id(frozen)) == 0


def test_trial_from_id_reads_and_reports_to_the_trial_another_process_created(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="s")
    asked = study.ask(X)
    elsewhere = optuna.load_study(study_name="s", storage=url)
    storage = optuna.storages.get_storage(url)
    trial = private.trial_from_id(elsewhere, _id(storage, study, asked.number))
    assert isinstance(trial, optuna.Trial)
    assert trial.number == asked.number
    assert trial.params == asked.params
    assert trial.suggest_float("x", 0.0, 1.0) == asked.params["x"]
    trial.report(0.25, step=1)
    assert study.trials[0].intermediate_values == {1: 0.25}


def test_rdb_backend_unwraps_optunas_cache_and_refuses_other_storages(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    cached = _cached(rdb)
    assert private.rdb_backend(cached) is rdb
    assert private.rdb_backend(rdb) is rdb
    assert private.rdb_backend(InMemoryStorage()) is None
    assert private.rdb_backend(optuna.storages.get_storage(None)) is None


def test_rdb_url_is_the_url_the_storage_was_opened_with(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    assert private.rdb_url(rdb) == f"sqlite:///{tmp_path}/optuna.db"
    assert private.rdb_url(_cached(rdb)) == rdb.url
    assert private.rdb_url(InMemoryStorage()) is None


def test_rdb_engine_reaches_optunas_tables(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    rdb = _rdb(tmp_path)
    optuna.create_study(storage=rdb).ask()
    engine = private.rdb_engine(rdb)
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM trials")).scalar() == 1


def test_grace_period_is_the_one_the_storage_was_opened_with(tmp_path: Path) -> None:
    assert private.grace_period(_rdb(tmp_path, heartbeat_interval=7, grace_period=9)) == 9
    assert private.grace_period(_rdb(tmp_path, "no-heartbeat")) is None


def test_heartbeat_interval_through_optunas_cache(tmp_path: Path) -> None:
    beating = _rdb(tmp_path, heartbeat_interval=7, grace_period=9)
    assert private.heartbeat_interval(beating) == 7
    assert private.heartbeat_interval(_cached(beating)) == 7
    assert private.heartbeat_interval(_rdb(tmp_path, "no-heartbeat")) is None
    assert private.heartbeat_interval(InMemoryStorage()) is None


def test_record_heartbeat_writes_a_beat_the_stale_check_sees(tmp_path: Path) -> None:
    rdb = _heartbeat_rdb(tmp_path)
    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    assert private.record_heartbeat(_cached(rdb), _id(rdb, study, trial.number))
    time.sleep(2.5)  # past the grace period: Optuna's own check now finds it stale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL
    silent = _rdb(tmp_path, "no-heartbeat")
    quiet = optuna.create_study(storage=silent)
    quiet.ask()
    assert not private.record_heartbeat(_cached(silent), _id(silent, quiet, 0))


def test_trials_with_heartbeat_tells_a_trial_that_never_beat(tmp_path: Path) -> None:
    rdb = _heartbeat_rdb(tmp_path)
    study = optuna.create_study(storage=rdb)
    beat, silent = study.ask(), study.ask()
    rdb.record_heartbeat(_id(rdb, study, beat.number))
    ids = [_id(rdb, study, beat.number), _id(rdb, study, silent.number)]
    assert private.trials_with_heartbeat(rdb, ids) == {ids[0]}
    assert private.trials_with_heartbeat(rdb, []) == set()


def test_retried_numbers_reads_optunas_retry_bookkeeping(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        rdb = _rdb(
            tmp_path,
            heartbeat_interval=1,
            grace_period=1,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    study = optuna.create_study(storage=rdb)
    dead = study.ask(X)
    rdb.record_heartbeat(_id(rdb, study, dead.number))
    time.sleep(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    failed, rerun = study.get_trials()
    assert failed.state == TrialState.FAIL and rerun.state == TrialState.WAITING
    assert private.retried_numbers(rerun) == [dead.number]
    assert private.retried_numbers(failed) == []


def test_was_queued_marks_an_enqueued_trial(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_rdb(tmp_path))
    study.enqueue_trial({"x": 0.5})
    study.ask()  # takes the queued trial
    study.ask()  # a sampled one
    queued, sampled = study.get_trials()
    assert private.was_queued(queued)
    assert not private.was_queued(sampled)


# --- optuna-dashboard: studies/dashboard_notes.py, studies/artifacts.py, analysis/ -------


def _get(app: Any, path: str) -> tuple[str, bytes]:
    """GET ``path`` from a WSGI application in this process: (status line, body)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    return status[0], body


def test_notes_of_a_study_and_a_trial_round_trip_and_reach_the_dashboard(
    tmp_path: Path,
) -> None:
    rdb = _rdb(tmp_path)
    study = optuna.create_study(storage=rdb, study_name="s")
    trial = study.ask()
    assert read_note(study) == "" and read_note(trial) == ""
    long = "| a | b |\n" * 400  # longer than one system attribute holds
    write_note(study, "study **note**")
    write_note(trial, long)
    assert read_note(study) == "study **note**"
    assert read_note(trial) == long
    status, body = _get(dashboard_app(rdb, None), f"/api/studies/{rdb.get_study_id_from_name('s')}")
    assert status.startswith("200")
    shown = json.loads(body)
    assert shown["note"]["body"] == "study **note**"
    assert shown["trials"][0]["note"]["body"] == long


def test_upload_png_stores_the_file_and_the_dashboard_serves_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    rdb = _rdb(tmp_path)
    study = optuna.create_study(storage=rdb, study_name="s")
    trial = study.ask()
    png = tmp_path / "figure.png"
    png.write_bytes(PNG)
    store = artifact_store_for(url, "s")
    artifact_id = upload_png(store, png, trial)
    with store.open_reader(artifact_id) as reader:
        assert reader.read() == PNG
    [meta] = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=rdb)
    assert (meta.artifact_id, meta.mimetype) == (artifact_id, "image/png")
    app = dashboard_app(rdb, StudiesArtifactStore(rdb, url, "s"))
    study_id, tid = rdb.get_study_id_from_name("s"), _id(rdb, study, trial.number)
    status, body = _get(app, f"/artifacts/{study_id}/{tid}/{artifact_id}")
    assert status.startswith("200") and body == PNG


def test_dashboard_app_answers_the_study_list(tmp_path: Path) -> None:
    rdb = _rdb(tmp_path)
    optuna.create_study(storage=rdb, study_name="listed")
    app = dashboard_app(rdb, None)
    status, body = _get(app, "/api/studies")
    assert status.startswith("200")
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["listed"]
    status, _ = _get(app, "/dashboard")
    assert status.startswith("200")


def test_serve_app_binds_the_address_given_and_says_when_it_is_taken(tmp_path: Path) -> None:
    app = dashboard_app(_rdb(tmp_path), None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            serve_app(app, "127.0.0.1", port, quiet=True)
    assert raised.value.errno == errno.EADDRINUSE


# --- Keras: trainer/keras_private.py ---------------------------------------------------------


def test_keras_home_follows_keras_home_in_a_fresh_process(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "kh"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    code = "from blood_automl.trainer.keras_private import keras_home; print(keras_home())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "kh")


def _residual_model() -> tuple[Any, dict[str, Any]]:
    """Input -> Dense -> (Dense + input, a ``keras.ops`` call, not a layer) -> Dense."""
    import keras

    inputs = keras.Input((4,), name="in")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    added = keras.ops.add(hidden, inputs)
    outputs = keras.layers.Dense(2, name="out")(added)
    model = keras.Model(inputs, outputs)
    return model, {"inputs": inputs, "hidden": hidden, "added": added, "outputs": outputs}


def test_operations_lists_ops_calls_that_are_not_layers() -> None:
    from blood_automl.trainer.keras_private import operations

    model, _ = _residual_model()
    ops = operations(model)
    layers = {id(layer) for layer in model.layers}
    assert [op.name for op in ops if id(op) in layers] == [layer.name for layer in model.layers]
    extra = [op for op in ops if id(op) not in layers]
    assert len(extra) == 1 and "add" in extra[0].name
    names = [op.name for op in ops]
    assert names.index("hidden") < names.index(extra[0].name) < names.index("out")


def test_tensors_in_and_out_connect_producer_to_consumer() -> None:
    from blood_automl.trainer.keras_private import operations, tensors_in, tensors_out

    model, t = _residual_model()
    by_name = {op.name: op for op in operations(model)}
    add = next(op for name, op in by_name.items() if "add" in name)
    assert [id(x) for x in tensors_out(by_name["hidden"])] == [id(t["hidden"])]
    assert {id(x) for x in tensors_in(add)} == {id(t["hidden"]), id(t["inputs"])}
    assert [id(x) for x in tensors_out(add)] == [id(t["added"])]
    assert [id(x) for x in tensors_in(by_name["out"])] == [id(t["added"])]


def test_first_call_stays_the_original_graph_after_a_cut() -> None:
    import keras

    from blood_automl.trainer.keras_private import first_call, operations, tensors_out

    model, t = _residual_model()
    by_name = {op.name: op for op in operations(model)}
    keras.Model(t["added"], t["outputs"])  # clones the nodes from "added" on
    assert len(tensors_out(by_name["out"])) == 2
    ins, outs = first_call(by_name["out"])
    assert [id(x) for x in ins] == [id(t["added"])]
    assert [id(x) for x in outs] == [id(t["outputs"])]
