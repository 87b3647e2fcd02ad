"""Hostile space files and space commands: pipes, devices, huge or deeply nested files, bad --out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostile.harness import Case, Ctx, param, run_case

pytestmark = pytest.mark.slow

_REGULAR = "give the path of a TOML space file"


def _search(ctx: Ctx, space: str) -> list[str]:
    """``search`` with ``--space SPACE`` on valid data and an existing store."""
    url = ctx.store()
    argv = ["search", "--data", ctx.good_npz(), "--space", space, "--storage", url]
    return [*argv, "--workers", "1", "--weights", "none"]


def _special(ctx: Ctx) -> Path:
    """A folder outside the watched ones, for files the disk watch must not read (pipes, links)."""
    factory: pytest.TempPathFactory = ctx.request.getfixturevalue("tmp_path_factory")
    return factory.mktemp("special")


def space_is_a_fifo(ctx: Ctx) -> list[str]:
    path = _special(ctx) / "space.toml"
    os.mkfifo(path)  # reading it would wait for a writer forever
    return _search(ctx, str(path))


def space_is_dev_zero(ctx: Ctx) -> list[str]:
    return _search(ctx, "/dev/zero")  # endless zero bytes


def space_links_to_dev_zero(ctx: Ctx) -> list[str]:
    path = _special(ctx) / "space.toml"
    path.symlink_to("/dev/zero")
    return _search(ctx, str(path))


def space_is_dev_stdin(ctx: Ctx) -> list[str]:
    return _search(ctx, "/dev/stdin")


def space_is_five_megabytes(ctx: Ctx) -> list[str]:
    comment = "# " + "x" * 98 + "\n"
    ctx.text("space.toml", comment * 50_000 + 'base = "cpu"\n')
    return _search(ctx, "space.toml")


def space_is_two_gigabytes(ctx: Ctx) -> list[str]:
    with (ctx.tmp / "space.toml").open("wb") as f:
        f.truncate(2 << 30)  # sparse: no disk used, but reading it would take 2 GB of memory
    return _search(ctx, "space.toml")


def space_nests_arrays_deeply(ctx: Ctx) -> list[str]:
    depth = 100_000
    ctx.text("space.toml", 'base = "cpu"\nx = ' + "[" * depth + "]" * depth + "\n")
    return _search(ctx, "space.toml")


def space_nests_inline_tables_deeply(ctx: Ctx) -> list[str]:
    depth = 100_000
    ctx.text("space.toml", "x = " + "{a = " * depth + "1" + "}" * depth + "\n")
    return _search(ctx, "space.toml")


def space_is_a_folder(ctx: Ctx) -> list[str]:
    (ctx.tmp / "myspace.toml").mkdir()
    return _search(ctx, "myspace.toml")


def space_is_binary_garbage(ctx: Ctx) -> list[str]:
    (ctx.tmp / "space.toml").write_bytes(b'base = "cpu"\n\xff\xfe\x00\x81garbage\x9c\n')
    return _search(ctx, "space.toml")


def show_unknown_space(ctx: Ctx) -> list[str]:
    return ["space", "show", "bogus"]


def show_fifo(ctx: Ctx) -> list[str]:
    path = _special(ctx) / "pipe.toml"
    os.mkfifo(path)
    return ["space", "show", str(path)]


def template_over_existing_file(ctx: Ctx) -> list[str]:
    ctx.text("myspace.toml", 'base = "cpu"\n# my own careful edits\n')
    return ["space", "template", "--preset", "cpu", "--out", "myspace.toml"]


def template_unknown_preset(ctx: Ctx) -> list[str]:
    return ["space", "template", "--preset", "tpu"]


def template_out_is_a_folder(ctx: Ctx) -> list[str]:
    (ctx.tmp / "spaces").mkdir()
    return ["space", "template", "--out", "spaces"]


def template_out_in_missing_folder(ctx: Ctx) -> list[str]:
    return ["space", "template", "--out", "no/such/folder/space.toml"]


CASES = [
    Case("space-fifo", space_is_a_fifo, "is a named pipe (FIFO)", _REGULAR, timeout=60),
    Case("space-dev-zero", space_is_dev_zero, "/dev/zero: is a character device", _REGULAR, timeout=60),
    Case("space-link-to-dev-zero", space_links_to_dev_zero, "space.toml: is a character device", _REGULAR, timeout=60),
    Case("space-dev-stdin", space_is_dev_stdin, "/dev/stdin: is a character device", _REGULAR, timeout=60),
    Case("space-5-mb", space_is_five_megabytes, "5,050,013 bytes, above the limit of 1,048,576", "a few kilobytes", timeout=60),
    Case("space-2-gb-sparse", space_is_two_gigabytes, "2,147,483,648 bytes, above the limit", "a few kilobytes", timeout=60),
    Case("space-deep-arrays", space_nests_arrays_deeply, "nests arrays or tables too deeply", "one [params.<name>] table", timeout=60),
    Case("space-deep-inline-tables", space_nests_inline_tables_deeply, "nests arrays or tables too deeply", "one [params.<name>] table", timeout=60),
    Case("space-folder", space_is_a_folder, "myspace.toml: is a folder", _REGULAR),
    Case("space-binary-garbage", space_is_binary_garbage, "is not UTF-8 text (byte 13 is 0xff)", "saved as UTF-8"),
    Case("space-show-bogus", show_unknown_space, "space 'bogus' is neither a preset", "use one of gpu, cpu, smoke"),
    Case("space-show-fifo", show_fifo, "pipe.toml: is a named pipe", _REGULAR, timeout=60),
    Case("space-template-exists", template_over_existing_file, "--out myspace.toml already exists", "pass --overwrite"),
    Case("space-template-bad-preset", template_unknown_preset, "--preset 'tpu' is not a preset", "use one of gpu, cpu, smoke"),
    Case("space-template-out-folder", template_out_is_a_folder, "--out spaces is a folder", "give the path of a .toml file"),
    Case("space-template-no-folder", template_out_in_missing_folder, "the folder no/such/folder does not exist", "create it"),
]  # fmt: skip


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_bad_space_input_gives_one_error_line_and_writes_nothing(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case, tmp_path, request)
