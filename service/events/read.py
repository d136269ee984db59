"""Reading study events: a complete prefix of a study's events, in id order.

On PostgreSQL ids come from a sequence and writers may commit out of id order, so a read
first takes the study's order lock (see service/events/write.py) and reads only up to the
last id handed out: every id up to there is settled. SQLite hands out ids in commit order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import NotFound
from service.events.write import ORDER_LOCK
from service.models import TERMINAL_STUDY, Event, Study

# How long a reader waits for the study's in-flight event writers (service.events): a
# writer that waits on a row lock held by a writer queued behind this reader would
# otherwise wait for it; giving up this soon breaks such a cycle, and the stream
# simply reads again.
ORDER_WAIT = "200ms"
READ_LIMIT = 500  # events per read


def events_after(
    s: Session, *, study_id: int, after: int, upto: int | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """The study's events with `after < id <= upto` (no upper bound if None), in order."""
    query = select(Event).where(Event.study_id == study_id, Event.id > after)
    if upto is not None:
        query = query.where(Event.id <= upto)
    rows = s.scalars(query.order_by(Event.id).limit(limit)).all()
    return [
        {
            "id": e.id,
            "type": e.type,
            "trial_id": e.trial_id,
            "data": e.data,
            "at": e.created_at,
        }
        for e in rows
    ]


# The highest event id handed out so far, of any study (None before the first).
LAST_EVENT_ID = func.pg_sequence_last_value(
    func.pg_get_serial_sequence("events", "id").cast(REGCLASS)
)


def take_order_lock(s: Session, study_id: int) -> bool:
    """Take the study's event order lock exclusively, for this transaction (PostgreSQL).

    Once held, no transaction that took an event id for the study is still running, so
    every id up to the sequence's last value (LAST_EVENT_ID) is settled. False, with the
    transaction rolled back, if the writers kept it longer than ORDER_WAIT: try again.
    """
    s.execute(text(f"SET LOCAL lock_timeout = '{ORDER_WAIT}'"))
    try:
        s.execute(select(func.pg_advisory_xact_lock(ORDER_LOCK, study_id)))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        s.rollback()
        return False
    return True


def read_settled(
    db: Database, study_id: int, after: int
) -> tuple[list[dict[str, Any]], bool, bool]:
    """(events after `after`, whether the study has ended, whether the read was complete).

    On PostgreSQL the read first takes the study's order lock (see service.events.write): once
    it has it, no transaction that took an event id for the study is still running, so
    every id up to the sequence's last value is settled. The lock is let go at once and
    the events are read up to that id, so writers wait only for those two statements. If
    the writers take longer than ORDER_WAIT, the read returns nothing, incomplete, and the
    caller reads again shortly.
    """
    with db.session(write=False) as s:
        upto = None
        if db.dialect == "postgresql":
            if not take_order_lock(s, study_id):
                return [], False, False
            # Read under the lock: a study seen ended has its last event at or below `upto`.
            found = s.execute(
                select(Study.status, LAST_EVENT_ID).where(Study.id == study_id)
            ).one_or_none()
            s.commit()  # lets the writers go
            status, upto = (found[0], found[1] or 0) if found else (None, None)
        else:
            status = s.scalar(select(Study.status).where(Study.id == study_id))
        if status is None:
            raise NotFound(f"study {study_id} does not exist")
        ended = status in TERMINAL_STUDY
        events = events_after(s, study_id=study_id, after=after, upto=upto, limit=READ_LIMIT)
        return events, ended, True
