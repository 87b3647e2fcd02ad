"""Dashboard tests: a real optuna-dashboard on 127.0.0.1 lists the studies and serves their images."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from PIL import Image

from blood_automl.analysis import dashboard
from blood_automl.analysis.dashboard import (
    dashboard_url,
    exposure_warning,
    is_loopback,
    run_dashboard,
)
from blood_automl.errors import ConfigError, StorageError
from blood_automl.studies import artifact_store_for, open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)

HOST = "127.0.0.1"
START_TIMEOUT = 30.0

_SERVER = """
import sys
from blood_automl.analysis.dashboard import run_dashboard
run_dashboard(sys.argv[1], sys.argv[2], host="127.0.0.1", port=int(sys.argv[3]), quiet=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def _make_study(url: str, name: str, n_trials: int, png: Path) -> None:
    study = optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")
    store = artifact_store_for(url, name)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.report(x / 2, 0)
        if trial.number == 0:
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(png), study_or_trial=trial, mimetype="image/png"
            )
        return x

    study.optimize(objective, n_trials=n_trials)


def _get(url: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def _get_json(url: str) -> Any:
    status, _, body = _get(url)
    assert status == 200
    return json.loads(body)


@contextlib.contextmanager
def _server(cwd: Path, url: str, study: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, url, study, str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                _, err = proc.communicate(timeout=5)
                pytest.fail(f"the dashboard exited with {proc.returncode}: {err.decode()[-2000:]}")
            try:
                _get(f"http://{HOST}:{port}/api/meta", timeout=1.0)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not answer on port {port} in {START_TIMEOUT} s")
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def test_dashboard_lists_the_studies_and_serves_their_artifacts(tmp_path: Path) -> None:
    url = "sqlite:///studies/blood-automl.db"  # relative, as the default: cwd is tmp_path
    red = _png(tmp_path / "red.png", (255, 0, 0))
    blue = _png(tmp_path / "blue.png", (0, 0, 255))
    with contextlib.chdir(tmp_path):
        _make_study(url, "main", 3, red)
        _make_study(url, "other", 2, blue)  # its images live in studies/other/artifacts
    port = _free_port()
    with _server(tmp_path, url, "main", port) as proc:
        base = f"http://{HOST}:{port}"
        meta = _get_json(f"{base}/api/meta")
        assert meta["artifact_is_available"] is True
        listed = {s["study_name"]: s for s in _get_json(f"{base}/api/studies")["study_summaries"]}
        assert set(listed) == {"main", "other"}
        for name, n_trials, png in (("main", 3, red), ("other", 2, blue)):
            study_id = listed[name]["study_id"]
            detail = _get_json(f"{base}/api/studies/{study_id}")
            assert detail["name"] == name
            assert len(detail["trials"]) == n_trials
            assert all(t["state"] == "Complete" for t in detail["trials"])
            first = detail["trials"][0]
            (artifact,) = first["artifacts"]
            status, kind, body = _get(
                f"{base}/artifacts/{study_id}/{first['trial_id']}/{artifact['artifact_id']}"
            )
            assert (status, kind) == (200, "image/png")
            assert body == png.read_bytes()
            with Image.open(io.BytesIO(body)) as im:
                assert im.size == (12, 10)
        status, kind, page = _get(f"{base}/dashboard")
        assert b"<html" in page.lower()
        assert status == 200 and "text/html" in kind
        assert proc.poll() is None
    assert proc.returncode is not None
    assert not (tmp_path / "studies" / "blood-automl").exists()  # nothing made for other names


def test_a_taken_port_is_a_clear_storage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=open_storage(url), study_name="s")
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        ready: list[str] = []
        with pytest.raises(StorageError, match=rf"port {port} on 127.0.0.1 is already in use") as e:
            run_dashboard(url, "s", HOST, port, quiet=True, on_ready=ready.append)
    assert "--port" in str(e.value) and "\n" not in str(e.value)
    assert ready == []


def test_missing_storage_or_study_and_bad_options_fail_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "_serve", lambda *a: pytest.fail("must not serve"))
    missing = tmp_path / "none.db"
    with pytest.raises(StorageError, match="no study storage at"):
        run_dashboard(f"sqlite:///{missing}", None, port=_free_port())
    assert not missing.exists()
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=open_storage(url), study_name="s")
    with pytest.raises(StorageError, match=r"study 'nope' not found .*existing studies: s"):
        run_dashboard(url, "nope", port=_free_port())
    with pytest.raises(ConfigError, match=r"--port must be .* got 0"):
        run_dashboard(url, "s", port=0)
    with pytest.raises(ConfigError, match="--host"):
        run_dashboard(url, "s", host=" ")


def test_loopback_serves_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(dashboard, "_serve", lambda *a: calls.append(a))
    url = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(storage=open_storage(url), study_name="s")
    port = _free_port()
    ready: list[str] = []
    run_dashboard(url, None, HOST, port, quiet=True, on_ready=ready.append)
    assert ready == [f"http://127.0.0.1:{port}/dashboard"]
    (storage, store, host, got_port, quiet) = calls[0]
    assert (host, got_port, quiet) == (HOST, port, True)
    assert isinstance(store, dashboard.StudiesArtifactStore)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert capsys.readouterr().err == ""


def test_non_loopback_addresses_get_a_one_line_warning() -> None:
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        assert exposure_warning(host, 8080, None) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "myserver.example.org"):
        assert not is_loopback(host)
        text = exposure_warning(host, 8080, "postgresql://u:secret@db/x")
        assert text is not None and "\n" not in text
        assert f"listens on {host}:8080" in text and "--host 127.0.0.1" in text
        assert "secret" not in text


def test_dashboard_url() -> None:
    assert dashboard_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/dashboard"
    assert dashboard_url("0.0.0.0", 9000) == "http://127.0.0.1:9000/dashboard"
    assert dashboard_url("::", 8080) == "http://[::1]:8080/dashboard"
    assert dashboard_url("localhost", 1) == "http://localhost:1/dashboard"


def test_a_trials_note_names_its_parameters_as_the_parameter_list_does() -> None:
    from blood_automl.search.objective import config_note
    from blood_automl.spaces import load_space, suggest

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(3))
    trial = study.ask()
    config = suggest(trial, load_space("cpu"))
    note = config_note(config, trial.number, trial.params)

    searched, whole = note.split("**Configuration given to the trainer**")
    rows = {line.split("|")[1].strip() for line in searched.splitlines() if line.startswith("| ")}
    assert rows - {"parameter"} == set(trial.params)  # the dashboard's names, every one
    assert "dense_width" in trial.params and "| dense_width |" in searched
    assert f"| backbone | {config.backbone} |" in whole
