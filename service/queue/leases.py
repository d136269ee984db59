"""Leases: who may write for a trial, handing one back, and reaping the expired (a thread)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import LeaseLost, NotFound
from service.events import emit
from service.metrics import LEASE_EXPIRIES
from service.models import Checkpoint, Study, Trial, TrialStatus
from service.periodic import Periodic
from service.queue.closing import after_trial_finished

log = logging.getLogger("caviar.service")


def lease_problem(trial_id: int, row: Any, token: str) -> NotFound | LeaseLost | None:
    """Why `token` may not write for trial `trial_id`, or None if it holds the lease.

    `row` is the trial as read (anything with `status` and `lease_token`), None if absent.
    """
    if row is None:
        return NotFound(f"trial {trial_id} does not exist")
    if row.status != TrialStatus.running or row.lease_token != token:
        return LeaseLost(f"trial {trial_id}: the lease is no longer held (status {row.status})")
    return None


def leased(s: Session, trial_id: int, token: str) -> Trial:
    """The running trial held by `token`, or LeaseLost (NotFound if no such trial).

    On PostgreSQL the row stays locked to the end of the transaction, so the reaper or
    another replica cannot take the lease between this check and the writes after it.
    """
    trial = s.scalars(
        select(Trial)
        .where(Trial.id == trial_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).first()
    if problem := lease_problem(trial_id, trial, token):
        raise problem
    assert trial is not None
    return trial


def release_trial(*, db: Database, trial_id: int, lease_token: str) -> None:
    """Hand a trial back to the queue without counting a retry (a worker shutting down).

    Its next attempt starts from its latest checkpoint (the worker stores one when it
    stops), or where this one started (a fork's, a resumed trial's) if it has none.
    """
    with db.session() as s:
        trial = leased(s, trial_id, lease_token)
        latest = s.execute(_LATEST_CHECKPOINT, {"trial_id": trial_id}).first()
        resume = trial.resume_checkpoint_id if latest is None else latest.id
        emit(
            s,
            study_id=trial.study_id,
            type="trial.released",
            trial_id=trial_id,
            from_epoch=latest.epoch if latest is not None else None,
        )
        s.execute(
            update(Trial)
            .where(Trial.id == trial_id, Trial.lease_token == lease_token)
            .values(
                status=TrialStatus.queued,
                lease_token=None,
                lease_expires_at=None,
                worker_id=None,
                resume_checkpoint_id=resume,
            )
        )


_LATEST_CHECKPOINT = (
    select(Checkpoint.id, Checkpoint.epoch)
    .where(Checkpoint.trial_id == bindparam("trial_id"))
    .order_by(Checkpoint.epoch.desc(), Checkpoint.attempt.desc())
    .limit(1)
)


# The running trials whose lease has expired: found through an index on their status
# (running trials are at most the workers' leases, however many the database holds),
# their leases read from the rows. No index holds the lease: every heartbeat moves it.
EXPIRED = (
    select(Trial.id, Trial.lease_token, Trial.retries, Study.max_retries, Trial.study_id)
    .join(Study, Study.id == Trial.study_id)
    .where(Trial.status == TrialStatus.running, Trial.lease_expires_at < db_epoch())
)


def reap_expired(*, db: Database) -> int:
    """Requeue (or fail, past max_retries) every running trial whose lease expired."""
    moved = 0
    with db.session() as s:
        stale = s.execute(EXPIRED).all()
        touched: set[int] = set()
        for row in stale:
            if row.retries >= row.max_retries:  # it fails: its study may end
                touched.add(row.study_id)
            moved += _reap(s, row)
        for study_id in touched:
            after_trial_finished(s, study_id=study_id)
    return moved


# A requeued trial's next attempt starts from its latest checkpoint, as a handed-back
# one's does, or where the lost attempt started if it kept none.
_RESUME_FROM = func.coalesce(
    select(Checkpoint.id)
    .where(Checkpoint.trial_id == Trial.id)
    .order_by(Checkpoint.epoch.desc(), Checkpoint.attempt.desc())
    .limit(1)
    .scalar_subquery(),
    Trial.resume_checkpoint_id,
)


def _reap(s: Session, row: Any) -> bool:
    """Requeue (from its latest checkpoint) or fail one stale trial; False if another
    reaper moved it first."""
    guard = (
        Trial.id == row.id,
        Trial.status == TrialStatus.running,
        Trial.lease_token == row.lease_token,
    )
    if row.retries < row.max_retries:
        values: dict[str, Any] = {
            "status": TrialStatus.queued,
            "retries": Trial.retries + 1,
            "resume_checkpoint_id": _RESUME_FROM,
        }
    else:
        values = {
            "status": TrialStatus.failed,
            "outcome": "lost",
            "error": (
                f"the worker stopped answering (lease expired) on "
                f"{row.retries + 1} attempts; max_retries is {row.max_retries}"
            ),
            "finished_at": func.now(),
        }
    values.update(lease_token=None, lease_expires_at=None, worker_id=None)
    result = s.execute(update(Trial).where(*guard).values(**values))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if values["status"] == TrialStatus.queued:
        emit(
            s,
            study_id=row.study_id,
            type="trial.requeued",
            trial_id=row.id,
            reason="lease expired",
            retries=row.retries + 1,
        )
    else:
        emit(
            s,
            study_id=row.study_id,
            type="trial.finished",
            trial_id=row.id,
            status="failed",
            outcome="lost",
            value=None,
            error=values["error"],
        )
    return True


class Reaper(Periodic):
    """A thread that puts trials whose lease expired back in the queue."""

    name = "caviar-reaper"
    wait_first = True
    logger = log

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        super().__init__(interval)

    def tick(self) -> None:
        moved = reap_expired(db=self.db)
        LEASE_EXPIRIES.inc(moved)
        if moved:
            log.info("reaper moved %d trials with expired leases", moved, extra={"action": "reap"})
