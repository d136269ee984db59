"""The statuses of studies and trials, and which of them are final: one list for all.

Kept apart from the ORM models so that the command line can read them without loading
SQLAlchemy.
"""

from __future__ import annotations

import enum


class StudyStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class TrialStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    pruned = "pruned"
    stopped = "stopped"


TERMINAL_TRIAL = frozenset(
    {TrialStatus.completed, TrialStatus.failed, TrialStatus.pruned, TrialStatus.stopped}
)
OPEN_TRIAL = frozenset({TrialStatus.queued, TrialStatus.running, TrialStatus.paused})
TERMINAL_STUDY = frozenset({StudyStatus.completed, StudyStatus.cancelled, StudyStatus.failed})
