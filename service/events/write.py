"""Writing study events: in the same transaction as the change they describe.

On PostgreSQL two more things travel with each event. A `pg_notify` on `CHANNEL`, with
the study's id, delivered at commit to every replica that listens: their event streams
wake at once instead of at their next poll. And a shared advisory lock on the study
(`ORDER_LOCK`), held to the end of the transaction: ids come from a sequence, so a
transaction can take id 10, another id 11 and commit first; a reader that saw 11 would
move its cursor past 10 for good. A reader takes the same lock exclusively (see
service/events/read.py): once it has it, every transaction that took an id for the
study has ended, so the study's events up to the sequence's last value are all there,
and reading up to that id gives a complete prefix. Writers share the lock, so they
never wait for each other; only a reader's brief hold (two statements) makes them wait.
SQLite needs neither: one writer at a time hands out ids in commit order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, String, Table, bindparam, cast, func, insert, literal, select
from sqlalchemy.orm import Session

from service.db import db_epoch
from service.models import Event

EVENT_TYPES = (
    "study.created",
    "round.created",
    "trial.started",
    "trial.metrics",
    "trial.finished",
    "trial.requeued",
    "trial.released",
    "trial.stop_requested",
    "study.cancelled",
    "study.requeued",
    "study.finished",
    "trial.paused",
    "trial.resumed",
    "trial.forked",
    "trial.checkpointed",
    "study.awaiting_review",
    "study.continued",
)


CHANNEL = "caviar_events"  # PostgreSQL LISTEN/NOTIFY channel; the payload is the study id
# The first key of the advisory locks that order a study's events (the second is the
# study id): a constant of Caviar's own, so other users of advisory locks are not hit.
ORDER_LOCK = 0x0CA71A5


def emit(s: Session, *, study_id: int, type: str, trial_id: int | None = None, **data: Any) -> None:
    """Record an event; it commits or rolls back with the change it reports."""
    assert type in EVENT_TYPES, type
    # Core, not the unit of work: an event is written once and never read back here.
    if s.get_bind().dialect.name != "postgresql":
        s.execute(
            insert(Event).values(
                study_id=study_id, type=type, trial_id=trial_id, data=data, created_at=db_epoch()
            )
        )
        return
    # One statement, one round trip: the CTE takes the lock and queues the notification
    # before the outer SELECT draws the id from the sequence (a CTE with volatile
    # functions is evaluated once, first, and never inlined).
    gate = select(
        func.pg_advisory_xact_lock_shared(ORDER_LOCK, study_id).label("locked"),
        func.pg_notify(CHANNEL, str(study_id)).label("notified"),
    ).cte("gate")
    row = select(
        literal(study_id, Integer),
        literal(type),
        cast(literal(trial_id, Integer), Integer),
        literal(data, Event.data.type),
        db_epoch(),
    ).select_from(gate)
    s.execute(
        insert(Event).from_select(["study_id", "type", "trial_id", "data", "created_at"], row)
    )


_EVENTS: Table = Event.__table__  # type: ignore[assignment]
# Prebuilt, so the compiled form is found in the statement cache without rebuilding it.
_INSERT_EVENTS = insert(_EVENTS).values(created_at=db_epoch())
# In the order given: WITH ORDINALITY, so the ids drawn from the sequence follow it.
_PG_INSERT_EVENTS = """
INSERT INTO events (study_id, type, trial_id, data, created_at)
SELECT e.study_id, e.type, e.trial_id, e.data::json, extract(epoch from clock_timestamp())::float8
FROM unnest(
    %(study_ids)s::integer[], %(types)s::varchar[], %(trial_ids)s::integer[], %(datas)s::text[]
) WITH ORDINALITY AS e(study_id, type, trial_id, data, n)
ORDER BY e.n
"""
_ORDER_GATE = select(
    func.pg_advisory_xact_lock_shared(ORDER_LOCK, bindparam("study_id", type_=Integer)),
    func.pg_notify(CHANNEL, cast(bindparam("study_id", type_=Integer), String)),
)


def emit_many(s: Session, events: Sequence[Mapping[str, Any]]) -> None:
    """Record several events in one insert, in order; each commits with its change.

    Each item has `study_id`, `type`, `trial_id` (or None) and `data`. On PostgreSQL the
    order lock and the notification are taken once per study, in the order of the study
    ids (writers that touch several studies then never wait on each other in a cycle
    with a reader), before any id is drawn from the sequence: the lock is held to the
    end of the transaction, so it covers every event inserted after it.
    """
    if not events:
        return
    for e in events:
        assert e["type"] in EVENT_TYPES, e["type"]
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        for study_id in sorted({int(e["study_id"]) for e in events}):
            conn.execute(_ORDER_GATE, {"study_id": study_id})
        # One statement over arrays: an executemany ran one INSERT per event on the
        # server (half of its time in a study of 1-epoch trials).
        conn.exec_driver_sql(
            _PG_INSERT_EVENTS,
            {
                "study_ids": [int(e["study_id"]) for e in events],
                "types": [e["type"] for e in events],
                "trial_ids": [e.get("trial_id") for e in events],
                "datas": [json.dumps(e["data"]) for e in events],
            },
        )
        return
    conn.execute(
        _INSERT_EVENTS,
        [
            {
                "study_id": e["study_id"],
                "type": e["type"],
                "trial_id": e.get("trial_id"),
                "data": e["data"],
            }
            for e in events
        ],
    )
