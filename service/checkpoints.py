"""Checkpoints of trials, for both modes: storing a worker's, reading, listing, keeping few.

A checkpoint is a trial's full training state at the end of an epoch: trainer.Checkpoint
bytes, or, for a study of a task's own function, whatever bytes that function keeps
(opaque to the service: stored as given, within the size cap). A panda study keeps every
one (forking from any epoch is what it is for); a caviar study keeps each trial's latest
few (see CAVIAR_CHECKPOINTS_KEPT).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import InvalidSpec, get_or_404, not_found
from service.events import emit
from service.models import Checkpoint, Study, Trial
from service.queue import lease_problem
from service.queue.results import (
    CAVIAR_CHECKPOINTS_KEPT,
    ResultError,
    check_checkpoint,
    keep_latest,
)
from service.queue.tables import TRIAL_EPOCHS, trial_epochs

__all__ = [
    "CAVIAR_CHECKPOINTS_KEPT",
    "MAX_CHECKPOINT_BYTES",
    "checkpoint_at",
    "checkpoint_content",
    "checkpoint_epochs",
    "latest_checkpoint",
    "list_checkpoints",
    "store_checkpoint",
]

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
# A caviar study trains many models and nobody babysits them: each trial keeps its latest
# checkpoints (CAVIAR_CHECKPOINTS_KEPT: a requeued or handed-back attempt resumes from the
# last; a finished trial can be continued from its end), not one per `checkpoint_every`
# epochs of every trial, which would fill the disk (10 checkpoints of a 2.8 MB Adam state
# per trial are 28 GB per thousand trials). A panda study keeps them all: forking from
# any epoch is what it is for. A finished trial's last checkpoint usually comes with its
# result (service.queue.results stores those); this is the upload of one on its own.


def store_checkpoint(
    *, db: Database, trial_id: int, lease_token: str, epoch: int, content: bytes
) -> int:
    """Keep a worker's checkpoint of its current attempt; returns its id.

    The lease is checked first; then the epoch against the trial's and, for the built-in
    trainer's trials, the bytes against the checkpoint format (ResultError, 422, for
    either). A task's function's checkpoints are its own bytes, stored as given.
    """
    if len(content) > MAX_CHECKPOINT_BYTES:
        raise InvalidSpec.at(
            "body", f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes", len(content)
        )
    # Core, not the unit of work: a worker sends one every `checkpoint_every` epochs of
    # every trial, and this is service CPU that competes with the workers' training.
    with db.session() as s:
        conn = s.connection()
        row = conn.execute(_LEASE_OF_TRIAL, {"trial_id": trial_id}).first()
        if problem := lease_problem(trial_id, row, lease_token):
            raise problem
        assert row is not None
        if epoch > trial_epochs(row.total_epochs):
            raise ResultError(
                f"epoch {epoch} is beyond the trial's {trial_epochs(row.total_epochs)} epochs"
            )
        if row.entrypoint is None:
            check_checkpoint(content, epoch=epoch)
        key = {"trial_id": trial_id, "attempt": row.attempt, "epoch": epoch}
        existing = conn.execute(_CHECKPOINT_AT, key).scalar()
        if existing is not None:  # a re-sent upload
            return int(existing)
        checkpoint_id = int(
            conn.execute(
                _INSERT_CHECKPOINT, {**key, "size_bytes": len(content), "content": content}
            ).scalar_one()
        )
        if row.mode == "caviar":
            keep_latest(conn, trial_ids=[trial_id])
        emit(s, study_id=row.study_id, type="trial.checkpointed", trial_id=trial_id, epoch=epoch)
        return checkpoint_id


# The trial's lease, epochs and its study's mode and entrypoint; on PostgreSQL the trial row stays
# locked (key share) to the end of the transaction, so the lease cannot move before the
# insert.
_LEASE_OF_TRIAL = (
    select(
        Trial.status,
        Trial.lease_token,
        Trial.attempt,
        Trial.study_id,
        TRIAL_EPOCHS,
        Study.mode,
        Study.entrypoint,
    )
    .join(Study, Study.id == Trial.study_id)
    .where(Trial.id == bindparam("trial_id"))
    .with_for_update(of=Trial, key_share=True)
)
_CHECKPOINT_AT = select(Checkpoint.id).where(
    Checkpoint.trial_id == bindparam("trial_id"),
    Checkpoint.attempt == bindparam("attempt"),
    Checkpoint.epoch == bindparam("epoch"),
)
_INSERT_CHECKPOINT = (
    insert(Checkpoint)
    .values(
        trial_id=bindparam("trial_id"),
        attempt=bindparam("attempt"),
        epoch=bindparam("epoch"),
        size_bytes=bindparam("size_bytes"),
        content=bindparam("content"),
        created_at=db_epoch(),
    )
    .returning(Checkpoint.id)
)


def latest_checkpoint(s: Session, trial_id: int) -> Checkpoint | None:
    """The trial's checkpoint of its furthest epoch (of the latest attempt that reached it)."""
    return s.scalars(
        select(Checkpoint)
        .where(Checkpoint.trial_id == trial_id)
        .order_by(Checkpoint.epoch.desc(), Checkpoint.attempt.desc())
        .limit(1)
    ).first()


def checkpoint_at(s: Session, trial_id: int, epoch: int) -> Checkpoint | None:
    """The trial's checkpoint after `epoch`, of the latest attempt that saved one there."""
    return s.scalars(
        select(Checkpoint)
        .where(Checkpoint.trial_id == trial_id, Checkpoint.epoch == epoch)
        .order_by(Checkpoint.attempt.desc())
        .limit(1)
    ).first()


def checkpoint_epochs(s: Session, trial_id: int) -> list[int]:
    """The epochs the trial has a checkpoint of, in order."""
    return list(
        s.scalars(
            select(Checkpoint.epoch)
            .where(Checkpoint.trial_id == trial_id)
            .distinct()
            .order_by(Checkpoint.epoch)
        ).all()
    )


def checkpoint_content(*, db: Database, checkpoint_id: int) -> bytes:
    with db.session(write=False) as s:
        content = s.scalar(select(Checkpoint.content).where(Checkpoint.id == checkpoint_id))
        if content is None:
            raise not_found(Checkpoint, checkpoint_id)
        return bytes(content)


def list_checkpoints(*, db: Database, trial_id: int) -> list[dict[str, Any]]:
    with db.session(write=False) as s:
        get_or_404(s, Trial, trial_id)
        rows = s.execute(
            select(Checkpoint.id, Checkpoint.attempt, Checkpoint.epoch, Checkpoint.size_bytes)
            .where(Checkpoint.trial_id == trial_id)
            .order_by(Checkpoint.epoch, Checkpoint.attempt)
        ).all()
        return [dict(r._mapping) for r in rows]
