"""Study events: written in the same transaction as the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
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


def emit(s: Session, *, study_id: int, type: str, trial_id: int | None = None, **data: Any) -> None:
    """Record an event; it commits or rolls back with the change it reports."""
    assert type in EVENT_TYPES, type
    # Core, not the unit of work: an event is written once and never read back here.
    s.execute(
        insert(Event).values(
            study_id=study_id, type=type, trial_id=trial_id, data=data, created_at=db_epoch()
        )
    )


def events_after(
    s: Session, *, study_id: int, after: int, limit: int = 500
) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(Event)
        .where(Event.study_id == study_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    ).all()
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
