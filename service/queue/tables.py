"""The core tables and the statements the claim, report and finish paths share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from service.db import db_epoch
from service.models import METRIC_FIELDS, Metric, Study, Trial, Worker

# Core tables, not the ORM entities: the hot paths need no identity map or unit of work.
STUDIES: Table = Study.__table__  # type: ignore[assignment]
TRIALS: Table = Trial.__table__  # type: ignore[assignment]
METRICS: Table = Metric.__table__  # type: ignore[assignment]
WORKERS: Table = Worker.__table__  # type: ignore[assignment]

TOUCH_WORKER = (
    update(WORKERS).where(WORKERS.c.id == bindparam("b_worker")).values(last_heartbeat=db_epoch())
)


def _metric_insert(dialect: str) -> Any:
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # A re-sent batch (the worker retried after a lost response) is ignored, not doubled.
    return insert_(METRICS).on_conflict_do_nothing(index_elements=["trial_id", "attempt", "epoch"])


METRIC_INSERTS = {d: _metric_insert(d) for d in ("postgresql", "sqlite")}


def clean(value: Any) -> float | None:
    """A reported number as stored: None for a missing or non-finite one."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def metric_rows(trial_id: int, attempt: int, epochs: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The metrics rows of reported epochs of one attempt."""
    return [
        {
            "trial_id": trial_id,
            "attempt": attempt,
            "epoch": int(e["epoch"]),
            **{k: clean(e.get(k)) for k in METRIC_FIELDS},
        }
        for e in epochs
    ]
