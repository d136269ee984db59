"""Panda: babysit one model. Pause, resume and fork trials from checkpoints; review steps.

A pause asks the worker to stop after its epoch; the worker saves a checkpoint and the
trial ends its attempt as `paused`, freeing the worker. Resume queues it again from its
latest checkpoint; fork queues a new trial from a checkpoint at a chosen epoch with some
hyperparameters changed, keeping the lineage. Either way the claim copies the learning
curve up to the checkpoint into the new attempt, so the curve, the objective and the
pruning decisions see one continuous run.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import Conflict, InvalidSpec, NotFound
from service.events import emit
from service.models import (
    TERMINAL_STUDY,
    Checkpoint,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
)
from service.queue import lease_problem
from service.studies import trial_dict
from trainer.checkpoint import FORKABLE_FIELDS
from trainer.config import TrainConfig

# What a fork may change: the optimization, never the architecture the weights fit. The
# trainer owns the list, since it is the trainer that must honour it on resume.
FORKABLE = FORKABLE_FIELDS
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
# A caviar study trains many models and nobody babysits them: each trial keeps its latest
# checkpoints (a requeued attempt resumes from the last; a finished trial can be continued
# from its end), not one per `checkpoint_every` epochs of every trial, which would fill the
# disk (10 checkpoints of a 2.8 MB Adam state per trial are 28 GB per thousand trials).
# A panda study keeps them all: forking from any epoch is what it is for.
CAVIAR_CHECKPOINTS_KEPT = 2


def _trial(s: Session, trial_id: int) -> Trial:
    trial = s.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial {trial_id} does not exist")
    return trial


def _detail(s: Session, trial: Trial) -> dict[str, Any]:
    s.flush()
    s.refresh(trial)
    return {**trial_dict(trial), "config": trial.config}


def _reopen_study(s: Session, study_id: int) -> None:
    """A study that had ended gets work again (a resume or a fork): it runs again."""
    study = s.get(Study, study_id)
    assert study is not None
    if study.status == StudyStatus.cancelled:
        raise Conflict(f"study {study_id} was cancelled; start a new study instead")
    if study.status in TERMINAL_STUDY:
        study.status = StudyStatus.running
        study.finished_at = None
        study.error = None


def pause_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Pause: a waiting trial at once; a running one after its epoch, with a checkpoint."""
    with db.session() as s:
        trial = _trial(s, trial_id)
        if trial.status == TrialStatus.running:
            trial.stop_requested = True
            trial.stop_reason = "pause"
        elif trial.status == TrialStatus.queued:
            trial.status = TrialStatus.paused
            emit(s, study_id=trial.study_id, type="trial.paused", trial_id=trial.id)
        else:
            raise Conflict(
                f"trial {trial_id} is {trial.status.value}; only a queued or running trial pauses"
            )
        return _detail(s, trial)


def latest_checkpoint(s: Session, trial_id: int) -> Checkpoint | None:
    return s.scalars(
        select(Checkpoint)
        .where(Checkpoint.trial_id == trial_id)
        .order_by(Checkpoint.epoch.desc(), Checkpoint.attempt.desc())
        .limit(1)
    ).first()


def resume_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Queue a paused trial again, from its latest checkpoint (from scratch if it has none)."""
    with db.session() as s:
        trial = _trial(s, trial_id)
        if trial.status != TrialStatus.paused:
            raise Conflict(f"trial {trial_id} is {trial.status.value}, not paused")
        _reopen_study(s, trial.study_id)
        ckpt = latest_checkpoint(s, trial_id)
        trial.status = TrialStatus.queued
        trial.outcome = None  # the pause is over; the next attempt says how it ends
        trial.resume_checkpoint_id = ckpt.id if ckpt is not None else None
        trial.stop_requested = False
        trial.stop_reason = None
        emit(
            s,
            study_id=trial.study_id,
            type="trial.resumed",
            trial_id=trial.id,
            from_epoch=ckpt.epoch if ckpt is not None else 0,
        )
        return _detail(s, trial)


def fork_trial(
    *, db: Database, trial_id: int, from_epoch: int, changes: dict[str, Any]
) -> dict[str, Any]:
    """A new trial that starts from `trial_id`'s checkpoint at `from_epoch`, with changes."""
    errors = [
        {
            "loc": f"changes.{key}",
            "msg": (
                "cannot change in a fork: the checkpoint's weights fit the old value"
                if key in TrainConfig.model_fields
                else "not a TrainConfig field"
            ),
            "input": value,
        }
        for key, value in changes.items()
        if key not in FORKABLE
    ]
    if errors:
        raise InvalidSpec(errors=errors)
    with db.session() as s:
        parent = _trial(s, trial_id)
        ckpt = s.scalars(
            select(Checkpoint)
            .where(Checkpoint.trial_id == trial_id, Checkpoint.epoch == from_epoch)
            .order_by(Checkpoint.attempt.desc())
            .limit(1)
        ).first()
        if ckpt is None:
            epochs = s.scalars(
                select(Checkpoint.epoch)
                .where(Checkpoint.trial_id == trial_id)
                .distinct()
                .order_by(Checkpoint.epoch)
            ).all()
            raise InvalidSpec(
                errors=[
                    {
                        "loc": "from_epoch",
                        "msg": f"trial {trial_id} has no checkpoint at epoch {from_epoch}; "
                        f"it has {', '.join(map(str, epochs)) or 'none'}",
                        "input": from_epoch,
                    }
                ]
            )
        try:
            config = TrainConfig(**{**parent.config, **changes})
        except ValidationError as exc:
            raise InvalidSpec(
                errors=[
                    {
                        "loc": "changes." + ".".join(str(p) for p in e["loc"]),
                        "msg": e["msg"],
                        "input": e.get("input"),
                    }
                    for e in exc.errors()
                ]
            ) from None
        if config.epochs <= from_epoch:
            raise InvalidSpec(
                errors=[
                    {
                        "loc": "changes.epochs",
                        "msg": f"must be more than from_epoch ({from_epoch}) to train at all",
                        "input": config.epochs,
                    }
                ]
            )
        _reopen_study(s, parent.study_id)
        number = (
            s.scalar(select(func.max(Trial.number)).where(Trial.study_id == parent.study_id)) or 0
        ) + 1
        child = Trial(
            study_id=parent.study_id,
            number=number,
            round_index=parent.round_index,
            params={**parent.params, **changes},
            config=config.model_dump(mode="json"),
            status=TrialStatus.queued,
            attempt=0,
            retries=0,
            stop_requested=False,
            epochs_done=0,
            parent_trial_id=parent.id,
            fork_epoch=from_epoch,
            resume_checkpoint_id=ckpt.id,
        )
        s.add(child)
        s.flush()
        emit(
            s,
            study_id=parent.study_id,
            type="trial.forked",
            trial_id=child.id,
            parent_trial_id=parent.id,
            from_epoch=from_epoch,
            changes=changes,
            number=number,
        )
        return {**_detail(s, child), "parent_trial_id": parent.id, "fork_epoch": from_epoch}


def continue_study(*, db: Database, study_id: int) -> None:
    """A panda study awaiting review goes on with its next trial."""
    with db.session() as s:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        if not study.awaiting_review:
            raise Conflict(f"study {study_id} is not waiting for a review")
        study.awaiting_review = False
        emit(s, study_id=study_id, type="study.continued")


def store_checkpoint(
    *, db: Database, trial_id: int, lease_token: str, epoch: int, content: bytes
) -> int:
    """Keep a worker's checkpoint of its current attempt; returns its id."""
    if len(content) > MAX_CHECKPOINT_BYTES:
        raise InvalidSpec(
            errors=[
                {
                    "loc": "body",
                    "msg": f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes",
                    "input": len(content),
                }
            ]
        )
    # Core, not the unit of work: a worker sends one every `checkpoint_every` epochs of
    # every trial, and this is service CPU that competes with the workers' training.
    with db.session() as s:
        conn = s.connection()
        row = conn.execute(_LEASE_OF_TRIAL, {"trial_id": trial_id}).first()
        if problem := lease_problem(trial_id, row, lease_token):
            raise problem
        assert row is not None
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
            conn.execute(_PRUNE, {"trial_id": trial_id, "study_id": row.study_id})
        emit(s, study_id=row.study_id, type="trial.checkpointed", trial_id=trial_id, epoch=epoch)
        return checkpoint_id


# The trial's lease and its study's mode; on PostgreSQL the trial row stays locked (key
# share) to the end of the transaction, so the lease cannot move before the insert.
_LEASE_OF_TRIAL = (
    select(Trial.status, Trial.lease_token, Trial.attempt, Trial.study_id, Study.mode)
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
# All but the trial's latest checkpoints, and never one a trial of the study resumes from.
_PRUNE = delete(Checkpoint).where(
    Checkpoint.trial_id == bindparam("trial_id"),
    Checkpoint.id.not_in(
        select(Checkpoint.id)
        .where(Checkpoint.trial_id == bindparam("trial_id"))
        .order_by(Checkpoint.attempt.desc(), Checkpoint.epoch.desc())
        .limit(CAVIAR_CHECKPOINTS_KEPT)
    ),
    Checkpoint.id.not_in(
        select(Trial.resume_checkpoint_id).where(
            Trial.study_id == bindparam("study_id"), Trial.resume_checkpoint_id.is_not(None)
        )
    ),
)


def checkpoint_content(*, db: Database, checkpoint_id: int) -> bytes:
    with db.session(write=False) as s:
        content = s.scalar(select(Checkpoint.content).where(Checkpoint.id == checkpoint_id))
        if content is None:
            raise NotFound(f"checkpoint {checkpoint_id} does not exist")
        return bytes(content)


def list_checkpoints(*, db: Database, trial_id: int) -> list[dict[str, Any]]:
    with db.session(write=False) as s:
        _trial(s, trial_id)
        rows = s.execute(
            select(Checkpoint.id, Checkpoint.attempt, Checkpoint.epoch, Checkpoint.size_bytes)
            .where(Checkpoint.trial_id == trial_id)
            .order_by(Checkpoint.epoch, Checkpoint.attempt)
        ).all()
        return [dict(r._mapping) for r in rows]
