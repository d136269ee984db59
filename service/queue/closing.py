"""A trial's end seen from its study: it ends, waits for review, or its next round falls due.

The next coarse-to-fine round is not planned here: planning fits a model (seconds), and
this runs inside a worker's finish request with the study row locked. A study whose
round is due says so by its own state (open, no open trial, current_round + 1 <
total_rounds), which survives the process; the planner (service.studies.rounds) finds
it there, and is woken through ROUNDS_DUE once the finish commits.
"""

from __future__ import annotations

import threading

from sqlalchemy import bindparam, event, exists, func, select, update
from sqlalchemy.orm import Session

from service.events import emit
from service.models import OPEN_TRIAL, TERMINAL_STUDY, Study, StudyStatus, Trial, TrialStatus
from service.queue.tables import STUDIES, TRIALS


class Wakeup:
    """Wakes every planner of this process waiting on it (each holds an Event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: set[threading.Event] = set()

    def subscribe(self, wake: threading.Event) -> None:
        with self._lock:
            self._events.add(wake)

    def unsubscribe(self, wake: threading.Event) -> None:
        with self._lock:
            self._events.discard(wake)

    def notify(self) -> None:
        with self._lock:
            for wake in self._events:
                wake.set()

    def notify_after_commit(self, s: Session) -> None:
        """Notify once `s` commits: woken earlier, a planner would not see the round due."""
        event.listen(s, "after_commit", lambda _session: self.notify(), once=True)


ROUNDS_DUE = Wakeup()

# A study whose next round is due: open, not held for review, no trial open, a round to go.
# The planner scans for these; a claim that finds no work says a round is coming.
ROUND_DUE = (
    Study.status.in_([StudyStatus.queued, StudyStatus.running]),
    Study.awaiting_review.is_(False),
    Study.current_round + 1 < Study.total_rounds,
    ~exists().where(Trial.study_id == Study.id, Trial.status.in_(OPEN_TRIAL)),
)


# The study a trial of which ended, locked FOR NO KEY UPDATE (see after_trial_finished).
_LOCK_STUDY = (
    select(
        STUDIES.c.status,
        STUDIES.c.mode,
        STUDIES.c.current_round,
        STUDIES.c.total_rounds,
    )
    .where(STUDIES.c.id == bindparam("b_study"))
    .with_for_update(key_share=True)
)
# EXISTS, not a count: it stops at the first open trial of the thousands queued. IN over
# the open statuses, not NOT IN the terminal ones: the (study_id, status) index then
# reads only open trials, however many have finished.
_STILL_OPEN = select(
    exists().where(TRIALS.c.study_id == bindparam("b_study"), TRIALS.c.status.in_(OPEN_TRIAL))
)


def after_trial_finished(s: Session, *, study_id: int) -> None:
    """End the study once no trial of it is open, or mark its next round due.

    The study row is locked first (a no-op on SQLite, whose write transactions are
    already serial), so of many trials finishing at once exactly one sees the round
    closed. The lock is FOR NO KEY UPDATE: it serializes these checks but not the KEY
    SHARE locks that inserting an event (a row referencing the study) takes; FOR UPDATE
    would deadlock two finishers that had each inserted an event. Core statements, not
    the unit of work: this runs in every batch of results a worker reports.
    """
    conn = s.connection()
    study = conn.execute(_LOCK_STUDY, {"b_study": study_id}).one()
    if study.status in TERMINAL_STUDY:
        return
    if study.mode == "panda" and mark_awaiting_review(s, study_id=study_id):
        return
    if conn.execute(_STILL_OPEN, {"b_study": study_id}).scalar():
        return
    if study.current_round + 1 < study.total_rounds:
        ROUNDS_DUE.notify_after_commit(s)
        return
    finish_study(s, study_id=study_id)


def finish_study(s: Session, *, study_id: int) -> None:
    produced = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.value.is_not(None))
    )
    status = StudyStatus.completed if produced else StudyStatus.failed
    error = None if produced else "no trial produced a value: every trial failed or diverged"
    ended = s.execute(
        update(Study)
        .where(Study.id == study_id, Study.status.in_([StudyStatus.queued, StudyStatus.running]))
        .values(status=status, error=error, finished_at=func.now())
    )
    if ended.rowcount == 1:  # type: ignore[attr-defined]
        emit(s, study_id=study_id, type="study.finished", status=status.value, error=error)


def mark_awaiting_review(s: Session, *, study_id: int) -> bool:
    """After a trial of a reviewed panda study ends, hold the next one for the person.

    The person then continues the study (its next queued trial runs), forks a trial with
    changes, or cancels; the claim passes over a study that awaits review.
    """
    spec = s.scalar(select(Study.spec).where(Study.id == study_id)) or {}
    if not spec.get("execution", {}).get("await_review"):
        return False
    waiting = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.status == TrialStatus.queued)
    )
    running = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.status == TrialStatus.running)
    )
    if not waiting or running:
        return False
    s.execute(update(Study).where(Study.id == study_id).values(awaiting_review=True))
    emit(s, study_id=study_id, type="study.awaiting_review", queued=waiting)
    return True
