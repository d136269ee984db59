"""The service log of studies and trials: one INFO line for each thing that happens to them.

A thread follows the events table, as the event streams do: what any request, worker
report, reaper or planner of any replica wrote, once committed. It writes a line, with
the ids, for what people look for in a log: a study created, a round opened, a trial
finished (completed, failed, pruned, stopped: with its value or error) or forked, a study
cancelled, re-queued, awaiting review, continued or finished. Per-epoch, lease and
checkpoint events are the streams' alone.

Events are read once they are `SETTLE_SECONDS` old: on PostgreSQL ids come from a sequence
and a transaction may commit an event after a later id was read; waiting this long keeps
such an event from being passed over, at the cost of that delay in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import case, func, select

from service.db import Database, db_epoch
from service.models import Event
from service.periodic import Periodic

log = logging.getLogger("caviar.service")

SETTLE_SECONDS = 2.0
_ERROR_CHARS = 300  # a failed trial's error, shortened to its first line and this long


def _error(data: Mapping[str, Any]) -> str:
    text = str(data.get("error") or "").strip().splitlines()
    return f": {text[0][:_ERROR_CHARS]}" if text else ""


def _trial_finished(sid: int, tid: int | None, d: Mapping[str, Any]) -> str:
    value = d.get("value")
    said = f", value {value:.6g}" if isinstance(value, int | float) else ""
    outcome = d.get("outcome")
    how = f" ({outcome})" if outcome and outcome != d.get("status") else ""
    failed = _error(d) if d.get("status") == "failed" else ""
    return f"study {sid}: trial id {tid} (#{d.get('number')}) {d.get('status')}{how}{said}{failed}"


# What each logged event type says; the others are not logged.
LINES: dict[str, Callable[[int, int | None, Mapping[str, Any]], str]] = {
    "study.created": lambda sid, _, d: (
        f"study {sid} created: {d.get('name')!r}, {d.get('trials')} trials in its first round"
    ),
    "round.created": lambda sid, _, d: (
        f"study {sid}: round {int(d.get('index', 0)) + 1} opened, {d.get('trials')} trials"
    ),
    "trial.finished": _trial_finished,
    "trial.forked": lambda sid, tid, d: (
        f"study {sid}: trial id {tid} forked from trial id {d.get('parent_trial_id')} "
        f"at epoch {d.get('from_epoch')}"
    ),
    "study.cancelled": lambda sid, _, d: f"study {sid} cancelled",
    "study.requeued": lambda sid, _, d: f"study {sid}: {d.get('trials')} trials queued again",
    "study.awaiting_review": lambda sid, _, d: f"study {sid} awaits a review to go on",
    "study.continued": lambda sid, _, d: f"study {sid} continued after its review",
    "study.finished": lambda sid, _, d: f"study {sid} finished: {d.get('status')}{_error(d)}",
}

_LAST_ID = select(func.max(Event.id))
# Every settled event, to move past it (metrics events are most of them); the data only
# of those logged.
_LOGGED = Event.type.in_(list(LINES))
_EVENTS = select(Event.id, Event.study_id, Event.type, Event.trial_id, case((_LOGGED, Event.data)))


def log_events(db: Database, after: int, *, settle: float = SETTLE_SECONDS) -> int:
    """Log the events after id `after` at least `settle` seconds old; the id to go on after."""
    query = (
        _EVENTS.where(Event.id > after, Event.created_at <= db_epoch() - settle)
        .order_by(Event.id)
        .limit(1000)
    )
    with db.session(write=False) as s:
        rows = s.execute(query).all()
    for event_id, study_id, kind, trial_id, data in rows:
        if kind in LINES:
            log.info(LINES[kind](study_id, trial_id, data or {}))
        after = event_id
    return after


class Journal(Periodic):
    """The thread that logs events, from the newest at its start on, every `interval` s."""

    name = "caviar-journal"
    failure_level = logging.DEBUG
    logger = log

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        self.db = db
        self.after: int | None = None  # the last event logged
        super().__init__(interval)

    def tick(self) -> None:
        if self.after is None:  # history is not news: from the newest event on
            with self.db.session(write=False) as s:
                self.after = int(s.scalar(_LAST_ID) or 0)
        self.after = log_events(self.db, self.after)
