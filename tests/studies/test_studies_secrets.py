"""Storage passwords stay hidden: masking by parsed URL, the lines that show a URL, the files written."""

from __future__ import annotations

import io
import json
import shlex
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import numpy as np
import optuna
import pytest
from sqlalchemy.engine import make_url

from blood_automl.errors import StorageError
from blood_automl.studies import mask_url, study_counts, summarize
from blood_automl.studies.urls import hide_secret, parse_url

# Each password holds "zq" in every piece, so any piece shown is found.
FORMS = {
    "slash": ("postgresql+psycopg2://bob:zq1/zq2@db.example:5432/studies", "bob:***@db.example"),
    "colon": ("postgresql://bob:zq1:zq2@db.example/studies", "bob:***@db.example"),
    "encoded-slash": ("postgresql://bob:zq1%2Fzq2@db.example/studies", "bob:***@db.example"),
    "encoded-at": ("mysql+pymysql://bob:zq1%40zq2@db.example/studies", "bob:***@db.example"),
    "every-kind": ("postgresql://bob:zq1/zq2:zq3%2Fzq4%40zq5@h:1/d", "bob:***@h:1/d"),
    "query": ("postgresql://bob@db.example/studies?password=zq1/zq2", "?password=***"),
    "sslpassword": ("postgresql://bob@h/d?sslmode=require&sslpassword=zq1", "sslpassword=***"),
    "token": ("postgresql://bob@h/d?auth_token=zq1&application_name=x", "auth_token=***"),
    "both": ("postgresql://bob:zq1@h/d?PASSWORD=zq2&sslmode=require", "PASSWORD=***&sslmode"),
}
UNREADABLE = {
    "raw-at": "postgresql://bob:zq1@zq2@db.example/studies",
    "raw-at-and-colon": "mysql+pymysql://bob:zq1@zq2:zq3@db.example/studies",
    "raw-at-then-slash": "postgresql://bob:zq1@zq2/zq3@db.example/studies",
    "raw-at-then-query": "postgresql://bob:zq1@zq2?zq3@db.example/studies",
    "bad-port": "postgresql://bob:zq1@db.example:zq2/studies",
    "no-scheme": "bob:zq1@db.example/studies",
}


@pytest.mark.parametrize(("url", "kept"), FORMS.values(), ids=FORMS.keys())
def test_mask_url_hides_every_password_form(url: str, kept: str) -> None:
    masked = mask_url(url)
    assert "zq" not in masked
    assert kept in masked
    assert make_url(masked).host == make_url(url).host  # still a readable URL


@pytest.mark.parametrize("url", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_url_shows_only_its_scheme(url: str) -> None:
    masked = mask_url(url)
    assert "zq" not in masked and "db.example" not in masked
    assert masked.endswith("<unparseable URL>")
    with pytest.raises(StorageError) as info:
        parse_url(url)
    assert "zq" not in str(info.value) and "percent-encode @ as %40" in str(info.value)


def test_mask_url_keeps_urls_without_secrets_as_given() -> None:
    for url in ("sqlite:///studies/a b:c.db", "sqlite:///:memory:", "postgresql://bob@h/d"):
        assert mask_url(url) == url
    assert mask_url(make_url("postgresql://bob:zq1/zq2@h/d")) == "postgresql://bob:***@h/d"


def test_hide_secret_removes_the_password_in_every_spelling() -> None:
    url = make_url("postgresql://bob:zq1/zq2@h/d?sslpassword=zq3%2Bzq4")
    said = "password zq1/zq2 or zq1%2Fzq2, ssl key zq3+zq4 refused"
    assert "zq" not in hide_secret(said, url)


# -- the lines of search that show a URL ----------------------------------------------------


@pytest.mark.parametrize(("url", "kept"), FORMS.values(), ids=FORMS.keys())
def test_resume_command_and_next_line_are_masked_and_pasteable(url: str, kept: str) -> None:
    from rich.console import Console

    from blood_automl.search.run import (
        SearchOptions,
        SearchResult,
        resume_command,
        stopped_by_user,
    )
    from blood_automl.search.session import print_summary

    options = SearchOptions(storage=url, study="s", workers=1)
    command = resume_command(options)
    assert "zq" not in command
    words = shlex.split(command)
    assert words[words.index("--storage") + 1] == mask_url(url)

    study = optuna.create_study(direction="maximize", study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    stopped = str(stopped_by_user(study, options))
    assert "zq" not in stopped and mask_url(url) in stopped

    out = io.StringIO()
    result = SearchResult(study=study, ran=1, counts=study_counts(study), top=summarize(study))
    print_summary(result, options, Console(file=out, width=40))  # narrower than the command
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("next: ")]
    assert "zq" not in out.getvalue()
    assert shlex.split(line)[-1] == mask_url(url)


# -- a real search on PostgreSQL with such a password: every line and file ------------------


@pytest.mark.slow
def test_search_report_and_refit_never_show_or_write_the_password(
    postgres_url: str, tmp_path: Path
) -> None:
    from conftest import make_images
    from hostile.harness import run_cli

    plain = make_url(postgres_url)
    auth = plain.render_as_string(hide_password=False).replace(
        f"{plain.username}@", f"{plain.username}:zq1/zq2:zq3%2Fzq4%40zq5@", 1
    )
    query = plain.render_as_string(hide_password=False) + "?password=zq6/zq7"
    images, labels = make_images(96, size=96, seed=3)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    study = f"secret-{uuid.uuid4().hex[:8]}"
    search = ["search", "--data", "train.npz", "--study", study, "--storage", auth]
    search += ["--preset", "smoke", "--weights", "none", "--trials", "1", "--no-recipes"]
    runs = [run_cli([*search, "--no-clean", "--workers", "1"], cwd=tmp_path)]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    shown = " ".join(runs[0].stdout.split())  # rich wraps long lines at 80 columns
    assert f"refit-best --study {study} --storage {mask_url(auth)}" in shown  # next: line
    report = ["report", "--study", study, "--storage", query, "--out", "r"]
    runs.append(run_cli(report, cwd=tmp_path))
    assert runs[-1].returncode == 0, runs[-1].stderr[-3000:]
    refit = ["refit-best", "--study", study, "--storage", auth, "--out", "e", "--no-portable"]
    runs.append(run_cli(refit, cwd=tmp_path))
    assert runs[-1].returncode == 0, runs[-1].stderr[-3000:]

    for run in runs:
        assert "zq" not in run.stdout + run.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["storage"] == mask_url(query) and "***" in summary["storage"]
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["storage"] == mask_url(auth) and "***" in config["storage"]
    # every spelling of both passwords (binary files hold "zq" by chance, so not that alone)
    forms = {f(pw) for pw in ("zq1/zq2:zq3/zq4@zq5", "zq6/zq7") for f in (str, quote, quote_plus)}
    forms |= {"zq1/zq2", "zq2:zq3", "zq4@zq5", "zq3%2Fzq4%40zq5"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "model.keras" for p in written)
    leaking = [(p, f) for p in written for f in forms if f.encode() in p.read_bytes()]
    assert leaking == []
