"""SQLAlchemy 2 models of studies, rounds, trials, metrics, data sets and workers."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The statuses live in service.statuses (the CLI reads them without SQLAlchemy); the
# service imports them from here too, beside the tables that store them.
from service.statuses import (  # noqa: F401
    OPEN_TRIAL,
    TERMINAL_STUDY,
    TERMINAL_TRIAL,
    StudyStatus,
    TrialStatus,
)

# A naming convention makes constraint names deterministic, so Alembic's SQLite batch
# mode and PostgreSQL autogenerate agree on what each constraint is called.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint: no PostgreSQL ENUM type to migrate.
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[StudyStatus] = mapped_column(
        _enum(StudyStatus, "study_status"), default=StudyStatus.queued
    )
    strategy: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    max_parallel: Mapped[int] = mapped_column(Integer)
    max_retries: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(16))
    total_rounds: Mapped[int] = mapped_column(Integer, default=1)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    parent_study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # The last time a trial of this study was handed out: claims go to the study that
    # waited longest, which is round-robin across studies.
    last_claim_at: Mapped[float | None] = mapped_column(Float)
    # panda with await_review: after each trial nothing runs until the person continues.
    awaiting_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # task.entrypoint: the function of the user's that its trials run (NULL: the built-in
    # trainer). Claims serve a study only to workers that offer it.
    entrypoint: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_studies_status_created", "status", "created_at"),)


class Round(Base):
    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    box: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("study_id", "index"),)


class Trial(Base):
    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 0-based within its study
    round_index: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    status: Mapped[TrialStatus] = mapped_column(
        _enum(TrialStatus, "trial_status"), default=TrialStatus.queued
    )
    # attempt counts claims (metrics are keyed by it, so a dead attempt's epochs never mix
    # with the next); retries counts only lease expiries, which max_retries bounds.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the worker is asked to stop: stop (a person), cancel, pause, or prune; it
    # decides the status the trial ends in.
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    prune_reason: Mapped[str | None] = mapped_column(Text)
    # Lineage of a fork, and the checkpoint a queued trial starts from (resume or fork).
    parent_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"))
    fork_epoch: Mapped[int | None] = mapped_column(Integer)
    resume_checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", use_alter=True, ondelete="SET NULL")
    )
    value: Mapped[float | None] = mapped_column(Float)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(16))  # completed | diverged | stopped ...
    error: Mapped[str | None] = mapped_column(Text)
    # execution.gradient_check: the worker's check of the network before training
    # (trainer.gradcheck.GradientReport.to_json()).
    gradient_check: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        # The claim scans queued trials in order; the reaper finds the running ones by
        # status too, and reads their leases from the rows (an index on the lease would
        # change with every heartbeat: migration 0007).
        Index("ix_trials_status_study", "status", "study_id", "id"),
        Index("ix_trials_study_status", "study_id", "status"),
        Index("ix_trials_study_value", "study_id", "value"),
    )


class Metric(Base):
    """One epoch of one attempt of a trial: the row every epoch of every trial writes.

    Keyed by what identifies it, with no surrogate id and no foreign key: a key checked on
    every inserted row was a third of what a row cost PostgreSQL. Rows are only written by
    a report that holds its trial's row, and a trigger on ``trials`` (migration 0006)
    deletes a trial's metrics with it.
    """

    __tablename__ = "metrics"

    trial_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_cost: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    dev_cost: Mapped[float | None] = mapped_column(Float)
    dev_accuracy: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    # Metrics of other names (a task's own function reports any): {name: value or null}.
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = ({"sqlite_with_rowid": False},)


# The values an epoch reports, in the order of the columns above: the one list the queue,
# the reads, the export and the dashboard take them from.
METRIC_FIELDS = (
    "train_cost",
    "train_accuracy",
    "dev_cost",
    "dev_accuracy",
    "learning_rate",
    "seconds",
)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(8))  # csv | npz
    size_bytes: Mapped[int] = mapped_column(Integer)
    n_rows: Mapped[int] = mapped_column(Integer)
    n_columns: Mapped[int] = mapped_column(Integer)
    label_column: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    last_heartbeat: Mapped[float] = mapped_column(Float)  # database clock, see db.db_epoch
    trials_done: Mapped[int] = mapped_column(Integer, default=0)
    # What it runs: the built-in trainer's trials (trainer), and those of studies whose
    # task.entrypoint is one of `entrypoints` (the functions installed where it runs).
    trainer: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    entrypoints: Mapped[list[Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_workers_last_heartbeat", "last_heartbeat"),)


class Event(Base):
    """What happened to a study, in order: the source of the server-sent event streams.

    Events live in the database, not in one replica's memory, so a client sees the same
    stream whichever replica it reaches, and a reconnect resumes after its last id.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    trial_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_events_study_id", "study_id", "id"),)


class Checkpoint(Base):
    """A trial's full training state at the end of an epoch (trainer.Checkpoint bytes)."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("trial_id", "attempt", "epoch"),)
