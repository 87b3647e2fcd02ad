"""The notes optuna-dashboard shows on a study or a trial: read and written here alone.

optuna-dashboard keeps a note in the study's system attributes under keys of its own and
reaches them through Optuna's private ``Study._storage``, ``_study_id`` and ``_trial_id``;
an upgrade of either library may change that, and ``tests/test_private_apis.py`` checks
both functions against the installed versions.
"""

from __future__ import annotations

import optuna


def read_note(study_or_trial: optuna.Study | optuna.Trial) -> str:
    """The Markdown note of a study or trial ("" when it has none): ``optuna_dashboard.get_note``.

    The dashboard stores notes in the study's system attributes through Optuna's private
    ``_storage`` / ``_study_id`` / ``_trial_id``.
    """
    from optuna_dashboard import get_note

    return str(get_note(study_or_trial))


def write_note(study_or_trial: optuna.Study | optuna.Trial, body: str) -> None:
    """Make ``body`` the study's or trial's note: ``optuna_dashboard.save_note``.

    Same private route as :func:`read_note`; the dashboard shows the note above the trial.
    """
    from optuna_dashboard import save_note

    save_note(study_or_trial, body)
