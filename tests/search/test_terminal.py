"""What a person sees during a search: start lines, pace and time left, failures, no TensorFlow chatter."""

from __future__ import annotations

import datetime
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from blood_automl.search.progress import (
    SearchProgress,
    data_note,
    duration_text,
    eta_seconds,
    phase_text,
    space_note,
)
from blood_automl.search.run import SearchOptions, _choose_space
from blood_automl.spaces import SCHEMA_VERSION, TrialConfig, load_space
from blood_automl.studies import LOG_ATTR
from blood_automl.trainer.quiet import NOISE, log_tail
from conftest import make_images

# -- the start lines ----------------------------------------------------------------------

MANIFEST: dict[str, Any] = {
    "n_input": 4854,
    "cleaning": True,
    "removed": [
        {"kind": "repeated", "count": 300},
        {"kind": "repeated", "count": 156},
        {"kind": "duplicate", "count": 120},
        {"kind": "class_outlier", "count": 8},
        {"kind": "forest_outlier", "count": 4},
    ],
    "split_sizes": {"train": 2730, "val": 683, "test": 853},
}


def test_data_note_says_what_the_data_step_did() -> None:
    assert data_note(MANIFEST) == (
        "data: 4,854 images read; removed 588 (456 repeated artefacts, 120 exact duplicates, "
        "12 outliers); split 2,730 / 683 / 853 (train / validation / test)"
    )


def test_data_note_without_cleaning_or_removals() -> None:
    sizes = {"train": 64, "val": 16, "test": 16}
    off = {"n_input": 96, "cleaning": False, "removed": [], "split_sizes": sizes}
    assert data_note(off) == "data: 96 images read; not cleaned; split 64 / 16 / 16 (train / validation / test)"  # fmt: skip
    clean = {**off, "cleaning": True}
    assert "cleaning removed none" in data_note(clean)


def test_space_note_names_preset_version_backbones_and_epochs() -> None:
    smoke = load_space("smoke")
    assert space_note(smoke) == (
        f"space: smoke (version {smoke.version}); 1 backbone: MobileNet-0.25; "
        "epochs per trial: up to 1 training the backbone, after 1 head-only in two_phase"
    )
    gpu = space_note(load_space("gpu"))
    assert "22 backbones: MobileNet-0.25, MobileNet-0.5" in gpu and ", ..." in gpu


def test_space_note_of_a_file_names_its_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    text = 'base = "gpu"\n[params.head_epochs]\nchoices = [4, 8]\n[params.finetune_epochs]\nvalue = 10\n'
    path.write_text(text, encoding="utf-8")
    note = space_note(load_space(path))
    assert "narrowing the gpu preset" in note and "epochs per trial: up to 10 training the backbone, after 4 or 8 head-only in two_phase" in note  # fmt: skip
    single = tmp_path / "single.toml"
    single.write_text('base = "cpu"\n[params.schedule]\nvalue = "single_phase"\n', encoding="utf-8")
    assert space_note(load_space(single)).endswith(
        "epochs per trial: up to 12 training the backbone"
    )


# -- pace and time left -------------------------------------------------------------------


def test_eta_is_the_median_trial_time_the_remaining_trials_need() -> None:
    assert eta_seconds([], 5) is None
    assert eta_seconds([10.0, 30.0, 1000.0], 4) == 120.0  # median 30 s, not the mean
    assert eta_seconds([30.0], 0) == 0.0
    # A running trial 20 s in needs 10 s more; two at a time halve the rest.
    assert eta_seconds([30.0], 2, running_elapsed=[20.0]) == 40.0
    assert eta_seconds([30.0], 4, running_elapsed=[20.0, 50.0], parallel=2) == (120 - 50) / 2


def test_durations_read_like_a_person_would_say_them() -> None:
    assert duration_text(42) == "42 s"
    assert duration_text(750) == "12.5 min"
    assert duration_text(3 * 3600 + 5 * 60) == "3 h 05 min"


def test_phase_and_epoch_of_a_running_trial() -> None:
    two = TrialConfig(schedule="two_phase", head_epochs=4, finetune_epochs=4)
    # The last reported step counts the fine-tuning epochs: none yet is the head phase.
    assert phase_text(None, two) == "head phase (4 epochs)"
    assert phase_text(1, two) == "fine-tune epoch 2/4"
    assert phase_text(4, two) == "fine-tune epoch 4/4"
    one = TrialConfig(schedule="single_phase", finetune_epochs=12)
    assert phase_text(None, one) == "epoch 1/12" and phase_text(5, one) == "epoch 6/12"
    head_only = TrialConfig(unfreeze_fraction=0.0, head_epochs=2)
    assert phase_text(1, head_only) == "head epoch 2/2"
    # A schema-1 study counted both phases under one step.
    assert phase_text(3, two, every_epoch=True) == "head epoch 4/4"
    assert phase_text(4, two, every_epoch=True) == "fine-tune epoch 1/4"


def _finished(study: optuna.Study, seconds: float, state: TrialState, **attrs: Any) -> None:
    start = datetime.datetime(2026, 1, 1)
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=0.5 if state == TrialState.COMPLETE else None,
            user_attrs={"backbone": "MobileNetV2", **attrs},
            intermediate_values={1: 0.5} if state == TrialState.PRUNED else {},
        )
    )
    trial = study.get_trials(deepcopy=False)[-1]
    trial.datetime_start = start  # what the storage keeps for this in-memory trial
    trial.datetime_complete = start + datetime.timedelta(seconds=seconds)


def test_progress_lines_without_a_terminal_are_plain(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    console = Console(file=open(os.devnull, "w"), record=True, width=200)  # noqa: SIM115
    assert not console.is_terminal
    log = tmp_path / "trial-2.log"
    log.write_text(
        "I0000 00:00:1796139112.470899    4859 port.cc:153] oneDNN custom operations are on.\n"
        "Traceback (most recent call last):\n"
        "MemoryError: could not allocate 4 GiB\n",
        encoding="utf-8",
    )
    with SearchProgress(study, 5, "accuracy", console) as progress:
        assert progress.live is None  # no redrawn table on a pipe or file
        _finished(study, 30.0, TrialState.COMPLETE)
        progress.poll()
        _finished(study, 90.0, TrialState.PRUNED)
        progress.poll()
        _finished(study, 60.0, TrialState.FAIL, fail_reason="MemoryError: boom", **{LOG_ATTR: str(log)})  # fmt: skip
        progress.poll()
    text = console.export_text()
    lines = text.splitlines()
    assert lines[0].endswith("accuracy 0.5000  (30 s)  [1/5, about 2.0 min left]")
    assert lines[0].startswith("trial    0 complete MobileNetV2 ")
    assert "trial    1 pruned" in lines[1] and "at epoch 1" in lines[1]
    # After three trials of 30, 90 and 60 s: 60 s each for the two left.
    assert lines[2].endswith("(60 s)  [3/5, about 2.0 min left]")
    assert "MemoryError: boom" in lines[2]
    assert "    | MemoryError: could not allocate 4 GiB" in text
    assert "oneDNN" not in text
    assert f"    log: {log}" in text


def test_log_tail_leaves_out_routine_start_up_lines(tmp_path: Path) -> None:
    log = tmp_path / "trial.log"
    routine = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796139112.471757    4859 cudart_stub.cc:31] Could not find cuda drivers",
        "E0000 00:00:1796139115.379692    4859 cuda_platform.cc:52] failed call to cuInit: 303",
    ]
    errors = [f"F0000 00:00:1.0 1 check.cc:{i}] Check failed: {i}" for i in range(10)]
    log.write_text("\n".join(routine + errors) + "\n", encoding="utf-8")
    assert log_tail(log) == errors[-6:]
    assert log_tail(tmp_path / "missing.log") == []
    assert all(NOISE.match(line) for line in routine)


# -- a space file without base ------------------------------------------------------------


def test_a_space_file_without_base_follows_the_hardware_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blood_automl.search.run as run

    monkeypatch.setattr(run, "_hardware_preset", lambda notes: "cpu")
    monkeypatch.setattr(run, "import_tensorflow_quietly", lambda: None)
    path = tmp_path / "mine.toml"
    path.write_text("[params.dropout]\nlow = 0.1\nhigh = 0.2\n", encoding="utf-8")
    notes: list[str] = []
    space = _choose_space(SearchOptions(space=str(path)), None, notes)
    assert space.base == "cpu" and space.backbones == load_space("cpu").backbones
    assert notes == [
        f"space file {path} names no base: it narrows the cpu preset (TensorFlow sees no GPU); "
        'write base = "gpu" or base = "cpu" in it to choose'
    ]
    path.write_text('[params.backbone]\nvalue = "EfficientNetB0"\n', encoding="utf-8")
    notes.clear()
    assert _choose_space(SearchOptions(space=str(path)), None, notes).base == "gpu"
    assert "asks for values beyond the cpu preset" in notes[0]


# -- a real search in a pseudo-terminal ---------------------------------------------------

# Everything TensorFlow, absl, oneDNN or CUDA print on their own.
_TF_LINE = re.compile(
    r"oneDNN custom operations|cuda|absl|I0000|E0000|W0000|WARNING: All log messages"
    r"|This TensorFlow binary is optimized|To enable the following instructions",
    re.IGNORECASE,
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def run_in_pty(argv: list[str], cwd: Path, timeout: float = 900) -> tuple[int, str]:
    """Run ``blood-automl ARGV`` with a 160-column pseudo-terminal as stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "blood_automl", *argv],
        cwd=cwd,
        env=dict(env, TERM="xterm-256color"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: every writer has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{argv} ran past {timeout} s")
    finally:
        os.close(master)
    code = proc.wait(30)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return code, _ANSI.sub("", text).replace("\r", "\n")


def _search_in_pty(tmp_path: Path, workers: int, trials: int) -> str:
    images, labels = make_images(96, size=96, seed=1)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    argv = ["search", "--data", "train.npz", "--preset", "smoke", "--weights", "none"]
    argv += ["--no-clean", "--no-recipes", "--workers", str(workers), "--trials", str(trials)]
    code, text = run_in_pty(argv, tmp_path)
    assert code == 0, text[-4000:]
    noise = [line for line in text.splitlines() if _TF_LINE.search(line)]
    assert noise == [], "\n".join(noise[:20])
    assert "data: 96 images read; not cleaned; split 64 / 16 / 16" in text
    assert f"space: smoke (version {SCHEMA_VERSION}-" in text
    assert "epochs per trial: up to 1 training the backbone" in text
    assert f"[{trials}/{trials}]" in text  # the last trial's line
    logs = tmp_path / "studies" / "blood-automl" / "logs"
    assert sorted(p.name for p in logs.glob("trial-*.log")) == [
        f"trial-{i}.log" for i in range(trials)
    ]
    # TensorFlow's start-up went to the trials' logs instead of the terminal.
    assert any(NOISE.match(line) for line in (logs / "trial-0.log").read_text().splitlines())
    return text


@pytest.mark.slow
def test_a_search_in_a_terminal_shows_no_tensorflow_lines(tmp_path: Path) -> None:
    text = _search_in_pty(tmp_path, workers=1, trials=2)
    assert re.search(r"pace +\d+ s per trial \(median of 1\); about \d+ s left", text)
    assert re.search(
        r"running +trial 1: MobileNet-0\.25, (head phase \(1 epoch\)|fine-tune epoch 1/1)", text
    )
    # The commands after a search load TensorFlow too, as quietly.
    for argv in (["refit-best"], ["predict", "exports/blood-automl", "train.npz"]):
        code, text = run_in_pty(argv, tmp_path)
        assert code == 0, text[-4000:]
        noise = [line for line in text.splitlines() if _TF_LINE.search(line)]
        assert noise == [], f"{argv}: " + "\n".join(noise[:20])


@pytest.mark.slow
def test_a_search_with_two_workers_in_a_terminal_shows_no_tensorflow_lines(
    tmp_path: Path,
) -> None:
    _search_in_pty(tmp_path, workers=2, trials=2)
    logs = tmp_path / "studies" / "blood-automl" / "logs"
    assert {"worker-0.log", "worker-1.log"} <= {p.name for p in logs.iterdir()}
