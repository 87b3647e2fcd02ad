"""The live search display and its plain lines: trials done / target, time per trial, ETA, phases."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from blood_automl.spaces import Choices, Domain, Fixed, Space, TrialConfig
from blood_automl.spaces.domains import domain_values
from blood_automl.spaces.plan import epoch_plan
from blood_automl.studies import study_counts, summarize
from blood_automl.studies.budget import counted
from blood_automl.studies.records import (
    BACKBONE_ATTR,
    CONFIG_ATTR,
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    LOG_ATTR,
    SURPLUS_ATTR,
)
from blood_automl.trainer.quiet import log_tail

#: How the data layer names its removal kinds in the start line.
_REMOVAL_WORDS = {
    "repeated": "repeated artefacts",
    "duplicate": "exact duplicates",
    "conflict": "conflicting duplicates",
    "class_outlier": "outliers",
    "forest_outlier": "outliers",
}


def data_note(manifest: Mapping[str, Any]) -> str:
    """What the data step did, from a prepared folder's manifest.

    e.g. ``data: 4,854 images read; removed 588 (456 repeated artefacts, 120 exact
    duplicates, 12 outliers); split 2,730 / 683 / 853 (train / validation / test)``.
    """
    n_input = int(manifest.get("n_input", 0))
    parts = [f"data: {n_input:,} images read"]
    removed: dict[str, int] = {}
    for group in manifest.get("removed", []):
        word = _REMOVAL_WORDS.get(str(group.get("kind")), "other")
        removed[word] = removed.get(word, 0) + int(group.get("count", 0))
    total = sum(removed.values())
    if not manifest.get("cleaning", True):
        parts.append("not cleaned")
    elif total:
        detail = ", ".join(f"{n:,} {word}" for word, n in removed.items())
        parts.append(f"removed {total:,} ({detail})")
    else:
        parts.append("cleaning removed none")
    sizes = manifest.get("split_sizes", {})
    if sizes:
        split = " / ".join(f"{int(sizes.get(k, 0)):,}" for k in ("train", "val", "test"))
        parts.append(f"split {split} (train / validation / test)")
    return "; ".join(parts)


def _span(domain: Domain) -> str:
    """A domain as short text: ``4``, ``2-8``, ``2 or 4``."""
    if isinstance(domain, Fixed):
        return str(domain.value)
    if isinstance(domain, Choices):
        return " or ".join(str(v) for v in domain.options)
    return f"{domain.low}-{domain.high}"


def space_note(space: Space) -> str:
    """What the search explores: the space, its version, backbones, epochs per trial."""
    backbones = space.backbones
    shown = ", ".join(backbones) if len(backbones) <= 8 else ", ".join(backbones[:6]) + ", ..."
    base = f", narrowing the {space.base} preset" if space.base else ""
    return (
        f"space: {space.name} (version {space.version}{base}); {len(backbones)} backbone"
        f"{'s' if len(backbones) != 1 else ''}: {shown}; epochs per trial: {_epochs_text(space)}"
    )


def _epochs_text(space: Space) -> str:
    if space.schema < 2:  # one counter over a head phase and a fine-tuning phase
        return f"{_span(space['head_epochs'])} head + {_span(space['finetune_epochs'])} fine-tune"
    text = f"up to {_span(space['finetune_epochs'])} training the backbone"
    if "two_phase" in (domain_values(space["schedule"]) or ()):
        text += f", after {_span(space['head_epochs'])} head-only in two_phase"
    return text


def duration_text(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``3 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def eta_seconds(
    durations: Sequence[float],
    remaining: int,
    running_elapsed: Sequence[float] = (),
    parallel: int = 1,
) -> float | None:
    """Seconds until ``remaining`` more trials have finished, or None before any has.

    Each trial takes the median of ``durations`` (the finished ones); trials already
    running have done ``running_elapsed`` of theirs; ``parallel`` run at a time.
    """
    if not durations or remaining <= 0:
        return None if not durations and remaining > 0 else 0.0
    per_trial = statistics.median(durations)
    done = sum(min(e, per_trial) for e in running_elapsed[:remaining])
    return max(0.0, remaining * per_trial - done) / max(1, parallel)


def phase_text(step: int | None, config: TrialConfig, every_epoch: bool = False) -> str:
    """The phase and epoch of a trial of ``config`` whose last reported step is ``step``."""
    return epoch_plan(config, every_epoch=every_epoch).phase_text(step)


def _trial_seconds(trial: FrozenTrial, now: float) -> float:
    if trial.datetime_start is None:
        return 0.0
    end = trial.datetime_complete.timestamp() if trial.datetime_complete else now
    return max(0.0, end - trial.datetime_start.timestamp())


def _running_text(trial: FrozenTrial, now: float) -> str:
    try:
        config = TrialConfig.from_dict(trial.user_attrs.get(CONFIG_ATTR) or {})
    except Exception:  # a config this code cannot read: say nothing of its phase
        return (
            f"trial {trial.number}: {trial.user_attrs.get(BACKBONE_ATTR, '?')}, "
            + duration_text(_trial_seconds(trial, now))
        )
    phase = phase_text(trial.last_step, config)
    backbone = trial.user_attrs.get(BACKBONE_ATTR, "?")
    return f"trial {trial.number}: {backbone}, {phase}, {duration_text(_trial_seconds(trial, now))}"


class SearchProgress:
    """Progress of a running search: a live table on a terminal, plain lines otherwise.

    Shows trials finished / target, time per trial (median of the finished ones), the
    time left to the target, the best value, and the running trials' phase and epoch.
    One line per finished trial is printed in both modes; on a failure, with the end
    of the trial's log and its path.
    """

    def __init__(self, study: optuna.Study, target: int, objective: str, console: Console) -> None:
        self.study, self.target, self.objective, self.console = study, target, objective, console
        self.started = time.monotonic()
        self.running: str = "starting"
        self.live: Live | None = None
        self._running_elapsed: dict[int, float] = {}  # trial number -> seconds so far
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
                top[0]["user_attrs"].get(BACKBONE_ATTR, "?"),
            )
        )
        now = time.time()
        counts["durations"] = [
            _trial_seconds(t, now)
            for t in counted(self.study.get_trials(deepcopy=False))
            if t.state.is_finished() and t.datetime_complete is not None
        ]
        return counts

    def __enter__(self) -> SearchProgress:
        if self.console.is_terminal:
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

    def eta(self) -> float | None:
        """Seconds left until the target, from the median time per trial; None before one ends."""
        c = self._counts
        running = list(self._running_elapsed.values())
        remaining = max(0, self.target - int(c["finished"]))
        return eta_seconds(c["durations"], remaining, running, max(1, len(running)))

    def _pace(self) -> str:
        durations = self._counts["durations"]
        if not durations:
            return "-  (known when the first trial ends)"
        eta = self.eta()
        left = "done" if not eta else f"about {duration_text(eta)} left"
        return (
            f"{duration_text(statistics.median(durations))} per trial "
            f"(median of {len(durations)}); {left}"
        )

    def render(self) -> Table:
        """The live table."""
        c = self._counts
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "trials",
            f"{c['finished']} / {self.target} finished  ({c['pruned']} pruned, {c['fail']} failed)",
        )
        table.add_row("pace", self._pace())
        best = (
            "-"
            if c["best"] is None
            else f"{c['best'][1]:.4f} (trial {c['best'][0]}, {c['best'][2]})"
        )
        table.add_row(f"best {self.objective}", best)
        table.add_row("running", self.running)
        table.add_row("elapsed", duration_text(time.monotonic() - self.started))
        return table

    def on_trial_start(self, trial: optuna.Trial, config: TrialConfig) -> None:
        """A trial of this process starts training."""
        self.running = f"trial {trial.number}: {config.backbone}, {phase_text(None, config)}"

    def on_epoch(self, trial: optuna.Trial, config: TrialConfig, step: int, value: float) -> None:
        """A trial trained in this process reported epoch ``step``."""
        phase = phase_text(step, config)
        self.running = (
            f"trial {trial.number}: {config.backbone}, {phase}, last {self.objective} {value:.4f}"
        )

    def poll(self) -> None:
        """Re-read the study (trials run by other processes): counts, running trials, new lines."""
        trials = self.study.get_trials(deepcopy=False)
        now = time.time()
        running = [t for t in trials if t.state == TrialState.RUNNING]
        self._running_elapsed = {t.number: _trial_seconds(t, now) for t in running}
        self.running = "; ".join(_running_text(t, now) for t in running) or "-"
        for t in trials:
            if t.state.is_finished() and t.number not in self._seen:
                self.on_trial_end(self.study, t)
        self._counts = self._count()

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Print the trial's line (and the end of its log when it failed)."""
        self._seen.add(trial.number)
        self._running_elapsed.pop(trial.number, None)
        if SURPLUS_ATTR in trial.user_attrs:
            return
        self._counts = self._count()
        self.running = "-"
        self.console.print(Text(self.trial_line(trial)))
        if trial.state == TrialState.FAIL and trial.user_attrs.get(LOG_ATTR):
            log = Path(str(trial.user_attrs[LOG_ATTR]))
            for line in log_tail(log):
                self.console.print(Text(f"    | {line}"), style="dim")
            self.console.print(Text(f"    log: {log}"), style="dim")

    def trial_line(self, trial: FrozenTrial) -> str:
        """``trial    3 complete MobileNet-0.25  accuracy 0.8123  (35 s)  [4/20, about 9 min left]``."""
        state = trial.state.name.lower()
        backbone = trial.user_attrs.get(BACKBONE_ATTR, "?")
        if trial.state == TrialState.COMPLETE:
            detail = f"{self.objective} {float(trial.value or 0.0):.4f}"
        elif trial.state == TrialState.PRUNED:
            detail = f"at epoch {trial.last_step}" if trial.last_step is not None else ""
        else:
            detail = str(trial.user_attrs.get(FAIL_REASON_ATTR) or "no reason recorded")
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        c = self._counts
        eta = self.eta()
        where = f"{c['finished']}/{self.target}" + (
            f", about {duration_text(eta)} left" if eta else ""
        )
        return (
            f"trial {trial.number:>4} {state:<8} {backbone:<18} {detail}  "
            f"({duration_text(seconds)})  [{where}]"
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
        epochs = row.get("user_attrs", {}).get(EPOCHS_ATTR)
        table.add_row(
            str(row["number"]),
            f"{row['value']:.4f}" if row.get("value") is not None else "-",
            str(
                row.get("user_attrs", {}).get(
                    BACKBONE_ATTR, row.get("params", {}).get("backbone", "?")
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
