"""The live search display: trials finished / target, pruned and failed, best so far, the running trial."""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from blood_automl.spaces import TrialConfig
from blood_automl.studies import study_counts, summarize


class SearchProgress:
    """Rich display of a running search; also prints one line per finished trial."""

    def __init__(self, study: optuna.Study, target: int, objective: str, console: Console) -> None:
        self.study, self.target, self.objective, self.console = study, target, objective, console
        self.started = time.monotonic()
        self.running: str = "starting"
        self.live: Live | None = None
        self._counts = self._count()
        self._seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def _count(self) -> dict[str, Any]:
        counts: dict[str, Any] = dict(study_counts(self.study))
        top = summarize(self.study, top=1)
        counts["best"] = (
            None
            if not top
            else (
                top[0]["number"],
                float(top[0]["value"]),
                top[0]["user_attrs"].get("backbone", "?"),
            )
        )
        return counts

    def __enter__(self) -> SearchProgress:
        self.live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=2,
            transient=True,
        )
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def render(self) -> Table:
        c = self._counts
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "trials",
            f"{c['finished']} / {self.target} finished  ({c['pruned']} pruned, {c['fail']} failed)",
        )
        best = (
            "-"
            if c["best"] is None
            else f"{c['best'][1]:.4f} (trial {c['best'][0]}, {c['best'][2]})"
        )
        table.add_row(f"best {self.objective}", best)
        table.add_row("running", self.running)
        table.add_row("elapsed", f"{(time.monotonic() - self.started) / 60:.1f} min")
        return table

    def on_trial_start(self, trial: optuna.Trial, config: TrialConfig) -> None:
        self.running = f"trial {trial.number}: {config.backbone}, epoch 0"

    def on_epoch(self, trial: optuna.Trial, config: TrialConfig, step: int, value: float) -> None:
        total = config.head_epochs + config.finetune_epochs
        self.running = f"trial {trial.number}: {config.backbone}, epoch {step}/{total}, {self.objective} {value:.4f}"

    def poll(self) -> None:
        """Re-read the study (trials run by other processes): counts, running trials, new lines."""
        trials = self.study.get_trials(deepcopy=False)
        running = [
            f"trial {t.number} ({t.user_attrs.get('backbone', '?')}, epoch {t.last_step or 0})"
            for t in trials
            if t.state == TrialState.RUNNING
        ]
        self.running = ", ".join(running) or "-"
        for t in trials:
            if t.state.is_finished() and t.number not in self._seen:
                self.on_trial_end(self.study, t)
        self._counts = self._count()

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._seen.add(trial.number)
        if "surplus" in trial.user_attrs:
            return
        self._counts = self._count()
        self.running = "-"
        state = trial.state.name.lower()
        backbone = trial.user_attrs.get("backbone", "?")
        if trial.state == TrialState.COMPLETE:
            detail = f"{self.objective} {float(trial.value or 0.0):.4f}"
        elif trial.state == TrialState.PRUNED:
            detail = f"at epoch {trial.last_step}" if trial.last_step is not None else ""
        else:
            detail = str(trial.user_attrs.get("fail_reason", ""))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        self.console.print(
            Text(f"trial {trial.number:>4} {state:<8} {backbone:<18} {detail}  ({seconds:.0f} s)")
        )


def top_table(study: optuna.Study, objective: str, top: int = 5) -> Table:
    """The best ``top`` complete trials as a rich table."""
    table = Table(title=f"top {top} trials of study '{study.study_name}'")
    for col in ("trial", objective, "backbone", "epochs", "parameters"):
        table.add_column(col)
    for row in summarize(study, top=top):
        params = ", ".join(
            f"{k}={_short(v)}" for k, v in sorted(row.get("params", {}).items()) if k != "backbone"
        )
        epochs = row.get("user_attrs", {}).get("epochs")
        table.add_row(
            str(row["number"]),
            f"{row['value']:.4f}" if row.get("value") is not None else "-",
            str(
                row.get("user_attrs", {}).get(
                    "backbone", row.get("params", {}).get("backbone", "?")
                )
            ),
            "-" if epochs is None else f"{epochs[0]}+{epochs[1]}",
            Text(params, overflow="fold"),
        )
    return table


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
