"""Output targets: atomic moves, markers, modes, stale temporaries, refusals, CSV cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from blood_automl import __version__
from blood_automl.errors import ConfigError
from blood_automl.outputs import (
    HOST_TAG,
    TEMP_PREFIX,
    check_output_dir,
    check_output_file,
    create_dir,
    csv_cell,
    remove_stale_temporaries,
    write_dir,
    write_file,
)


@pytest.fixture(autouse=True)
def _strict_umask_and_no_hang() -> Iterator[None]:
    """Umask 077 (modes must not depend on it) and an alarm: opening a FIFO would block."""
    old = os.umask(0o077)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        os.umask(old)


def _fill(text: str) -> Any:
    def fill(folder: Path) -> None:
        (folder / "a.txt").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.bin").write_bytes(b"\0" * 10)

    return fill


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_folder_is_written_with_marker_and_readable_modes(tmp_path: Path) -> None:
    out = write_dir(tmp_path / "deep" / "exp", "export", _fill("one"), overwrite=False)
    assert (out / "a.txt").read_text() == "one"
    marker = json.loads((out / ".blood-automl-export").read_text())
    assert marker["kind"] == "export" and marker["version"] == __version__
    for path in [out, out / "sub", tmp_path / "deep"]:  # a folder made above it too
        assert path.stat().st_mode & 0o777 == 0o755
    for path in [out / "a.txt", out / "sub" / "b.bin", out / ".blood-automl-export"]:
        assert path.stat().st_mode & 0o777 == 0o644
    assert _temporaries(out.parent) == []


def test_own_folder_is_replaced_only_with_overwrite_and_atomically(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    write_dir(out, "export", _fill("one"), overwrite=False)
    with pytest.raises(ConfigError, match=r"already exists and is not empty; pass --overwrite"):
        write_dir(out, "export", _fill("two"), overwrite=False)

    def fill(folder: Path) -> None:
        assert (out / "a.txt").read_text() == "one"  # the old one stays until the move
        _fill("two")(folder)

    write_dir(out, "export", fill, overwrite=True)
    assert (out / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_a_failing_fill_leaves_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    write_dir(out, "export", _fill("one"), overwrite=False)

    def broken(folder: Path) -> None:
        (folder / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir(out, "export", broken, overwrite=True)
    assert (out / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_other_folders_are_never_replaced(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=r"did not make it .*remove .*docs yourself"):
        write_dir(docs, "export", _fill("x"), overwrite=True)
    (docs / ".blood-automl-export").write_text("not json")
    with pytest.raises(ConfigError, match="did not make it"):
        check_output_dir(docs, "export", overwrite=True)
    (docs / ".blood-automl-export").write_text('{"kind": "report"}')  # wrong kind inside
    with pytest.raises(ConfigError, match="did not make it"):
        check_output_dir(docs, "export", overwrite=True)
    (docs / ".blood-automl-export").unlink()
    (docs / ".blood-automl-report").symlink_to(docs / "thesis.tex")
    with pytest.raises(ConfigError, match="did not make it"):
        check_output_dir(docs, "report", overwrite=True)
    assert (docs / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty, "report", overwrite=False) == empty  # nothing to lose


def test_working_directory_system_folders_and_protected_paths_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for target, message in [
        (".", "is the working directory"),
        (str(work), "is the working directory"),
        ("..", "parent of the working directory"),
        ("/", "parent of the working directory"),
        ("/proc/self", "lies under /proc"),
        ("/sys/x", "lies under /sys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_output_dir(target, "report", overwrite=True)
    study = tmp_path / "studies" / "s"
    store = tmp_path / "studies" / "db.sqlite"
    for target in [study, study / "report", tmp_path / "studies"]:
        with pytest.raises(ConfigError, match="belongs to the study"):
            check_output_dir(target, "report", overwrite=False, protected=[study, store])
    assert check_output_dir("new", "report", overwrite=False, protected=[study, store])


def test_file_targets_only_replace_regular_files_with_overwrite(tmp_path: Path) -> None:
    def write(f: IO[Any]) -> None:
        f.write("a,b\n")

    out = tmp_path / "sub" / "p.csv"
    write_file(out, write, overwrite=False)
    assert out.read_text() == "a,b\n" and out.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ConfigError, match=r"p.csv exists; pass --overwrite"):
        write_file(out, write, overwrite=False)
    out.write_text("old")
    write_file(out, write, overwrite=True)
    assert out.read_text() == "a,b\n"
    assert _temporaries(out.parent) == []

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.csv"
    link.symlink_to("/dev/null")
    cases = [
        (fifo, "is a FIFO"),
        (Path("/dev/null"), "is a device"),
        (link, r"is a symbolic link \(to /dev/null\)"),
        (tmp_path, "is a folder, not a file"),
        (Path("/proc/self/x.csv"), "lies under /proc"),
        (out / "x.csv", "is not a folder"),
    ]
    for target, message in cases:
        with pytest.raises(ConfigError, match=message):
            write_file(target, write, overwrite=True)  # returns at once: nothing is opened
    assert fifo.is_fifo() and link.is_symlink() and Path("/dev/null").is_char_device()
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("years of work")
    with pytest.raises(ConfigError, match=r"is not a .csv file, so it is never replaced"):
        write_file(thesis, write, overwrite=True)
    assert thesis.read_text() == "years of work"
    with pytest.raises(ConfigError, match="is the input"):
        check_output_file(out, overwrite=True, inputs=[tmp_path / "sub" / "p.csv"])


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path: Path) -> None:
    dead, alive = f"{HOST_TAG}-{_dead_pid()}", f"{HOST_TAG}-{os.getppid()}"
    other = "0" * len(HOST_TAG)  # another machine sharing the folder
    hour_ago, two_days_ago = time.time() - 3600, time.time() - 2 * 86_400
    stale_dir = tmp_path / f"{TEMP_PREFIX}exp.{dead}.0123abcd"
    stale_file = tmp_path / f"{TEMP_PREFIX}p.csv.{dead}.89abcdef"
    running = tmp_path / f"{TEMP_PREFIX}exp.{alive}.01234567"
    foreign = tmp_path / ".exp.k2j3h4"  # a hidden folder of the user: not ours by name
    other_recent = tmp_path / f"{TEMP_PREFIX}exp.{other}-1.aaaaaaaa"  # may still be writing
    other_old = tmp_path / f"{TEMP_PREFIX}exp.{other}-1.bbbbbbbb"
    for folder in (stale_dir, running, foreign, other_recent, other_old):
        folder.mkdir()
        (folder / "model.keras").write_text("half")
    stale_file.write_text("half")
    for path in (stale_dir, stale_file, running, foreign, other_recent):
        os.utime(path, (hour_ago, hour_ago))
    os.utime(other_old, (two_days_ago, two_days_ago))
    fresh = tmp_path / f"{TEMP_PREFIX}exp.{dead}.fedcba98"  # newer than this process
    fresh.mkdir()

    write_dir(tmp_path / "exp", "export", _fill("x"), overwrite=False)
    left = {p.name for p in tmp_path.iterdir()}
    kept = {running.name, foreign.name, fresh.name, other_recent.name, "exp"}
    assert left == kept  # stale_dir, stale_file and other_old are gone
    assert remove_stale_temporaries(tmp_path) == []


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        ("", ""),
        (-1.5, -1.5),
        (3, 3),
    ],
)
def test_csv_cells_that_start_like_formulas_are_quoted(cell: Any, written: Any) -> None:
    assert csv_cell(cell) == written


_WRITER = """
import sys, time
from pathlib import Path
from blood_automl.outputs import write_dir

def fill(folder):
    (folder / "model.keras").write_text("half")
    print("filling", flush=True)
    if sys.argv[2] == "hang":
        time.sleep(600)

write_dir(Path(sys.argv[1]), "export", fill, overwrite=True)
"""


def test_a_run_killed_mid_export_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "exports" / "study"
    killed = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out), "hang"], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout is not None and killed.stdout.readline().strip() == "filling"
    killed.kill()
    killed.wait()
    assert len(_temporaries(out.parent)) == 1 and not out.exists()  # what the kill left
    subprocess.run([sys.executable, "-c", _WRITER, str(out), "finish"], check=True, timeout=60)
    assert sorted(p.name for p in out.parent.iterdir()) == ["study"]
    assert (out / ".blood-automl-export").is_file()


# -- folders made once (a study's prepared data) ------------------------------------------------


def test_create_dir_fills_a_temporary_and_moves_it_into_place(tmp_path: Path) -> None:
    seen: list[Path] = []

    def fill(folder: Path) -> None:
        seen.append(folder)
        assert folder.parent == tmp_path and folder.name.startswith(TEMP_PREFIX)
        (folder / "a.txt").write_text("a", encoding="utf-8")

    target = tmp_path / "data"
    assert create_dir(target, fill, done=lambda f: (f / "a.txt").is_file())
    assert (target / "a.txt").read_text(encoding="utf-8") == "a"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_create_dir_drops_its_work_when_another_process_made_the_folder_first(
    tmp_path: Path,
) -> None:
    target = tmp_path / "data"

    def fill(folder: Path) -> None:
        (folder / "mine.txt").write_text("mine", encoding="utf-8")
        target.mkdir()  # another process finished first
        (target / "theirs.txt").write_text("theirs", encoding="utf-8")

    assert not create_dir(target, fill, done=lambda f: (f / "theirs.txt").is_file())
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_create_dir_leaves_nothing_when_filling_fails(tmp_path: Path) -> None:
    def fill(folder: Path) -> None:
        (folder / "half.npy").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        create_dir(tmp_path / "data", fill, done=lambda f: True)
    assert list(tmp_path.iterdir()) == []
