"""The trial queue: claim with a lease, heartbeat, report, finish, release and reap.

Every transition is a compare-and-set on (id, status, lease_token): the loser of a race
changes nothing and is told so (LeaseLost), so a trial's result is stored exactly once
however many workers, reapers or replicas touch it.
"""

from __future__ import annotations

import math
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import LeaseLost, NotFound
from service.events import emit
from service.models import (
    TERMINAL_TRIAL,
    Checkpoint,
    Metric,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
    Worker,
)
from service.pruning import rungs, should_prune
from service.rounds import after_trial_finished
from service.spec import PruningSpec

METRIC_FIELDS = (
    "train_cost",
    "train_accuracy",
    "dev_cost",
    "dev_accuracy",
    "learning_rate",
    "seconds",
)


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one trial."""

    trial_id: int
    study_id: int
    number: int
    attempt: int
    lease_token: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    checkpoint_every: int = 0
    resume: dict[str, Any] | None = None  # {"checkpoint_id", "epoch"}: start from there
    report_at: list[int] = field(default_factory=list)  # epochs to report at once (rungs)


def register_worker(*, db: Database, name: str, host: str | None, pid: int | None) -> str:
    worker_id = f"w-{secrets.token_hex(6)}"
    with db.session() as s:
        now = s.scalar(select(db_epoch()))
        s.add(
            Worker(
                id=worker_id,
                name=name,
                host=host or socket.gethostname(),
                pid=pid,
                started_at=now,
                last_heartbeat=now,
                trials_done=0,
            )
        )
    return worker_id


def claim_trials(
    *, db: Database, worker_id: str, max_trials: int, lease_seconds: float
) -> list[Claimed]:
    """Lease up to `max_trials` queued trials to `worker_id`.

    Studies are served oldest-waiting first (the one whose last claim is oldest), which is
    round-robin across studies; `max_parallel` and panda's one-at-a-time are enforced
    under a lock on the study row, so two replicas cannot both take the last free slot.
    """
    claimed: list[Claimed] = []
    is_pg = db.dialect == "postgresql"
    with db.session() as s:
        _touch_worker(s, worker_id)
        has_queued = exists().where(
            and_(Trial.study_id == Study.id, Trial.status == TrialStatus.queued)
        )
        candidates = (
            select(Study.id)
            .where(
                Study.status.in_([StudyStatus.queued, StudyStatus.running]),
                Study.awaiting_review.is_(False),
                has_queued,
            )
            .order_by(Study.last_claim_at.asc().nulls_first(), Study.id)
            .limit(16)
        )
        studies: Sequence[int] = []
        if is_pg:
            # The study rows stay locked to the end of the transaction: a replica that
            # finds one locked serves another study, and max_parallel is counted under
            # the lock, so two replicas cannot both fill the last free slot. NO KEY
            # UPDATE, not UPDATE: see rounds.after_trial_finished.
            studies = s.scalars(
                candidates.with_for_update(skip_locked=True, of=Study, key_share=True)
            ).all()
            if not studies:
                # Every study with work is locked by a short claim or finish: wait for
                # one rather than send the worker to sleep with work in the queue.
                studies = s.scalars(
                    candidates.limit(1).with_for_update(of=Study, key_share=True)
                ).all()
        else:
            studies = s.scalars(candidates).all()
        for study_id in studies:
            if len(claimed) >= max_trials:
                break
            claimed.extend(
                _claim_from_study(
                    s,
                    study_id=study_id,
                    worker_id=worker_id,
                    want=max_trials - len(claimed),
                    lease_seconds=lease_seconds,
                )
            )
    return claimed


def _claim_from_study(
    s: Session, *, study_id: int, worker_id: str, want: int, lease_seconds: float
) -> list[Claimed]:
    study = s.get(Study, study_id)
    assert study is not None
    cap = 1 if study.mode == "panda" else study.max_parallel
    running = s.scalar(
        select(func.count())
        .select_from(Trial)
        .where(Trial.study_id == study_id, Trial.status == TrialStatus.running)
    )
    free = cap - (running or 0)
    if free <= 0:
        return []
    # One statement takes the trials: a CTE picks queued rows (on PostgreSQL locking them
    # FOR UPDATE SKIP LOCKED, so replicas pass over each other's picks instead of
    # waiting) and the UPDATE ... RETURNING leases them. SQLite, whose write transactions
    # are serial under BEGIN IMMEDIATE, runs the same statement without the lock clause.
    picked = (
        select(Trial.id)
        .where(Trial.study_id == study_id, Trial.status == TrialStatus.queued)
        .order_by(Trial.id)
        .limit(min(free, want))
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    batch = secrets.token_hex(16)
    rows = s.execute(
        update(Trial)
        .where(Trial.id.in_(select(picked.c.id)), Trial.status == TrialStatus.queued)
        .values(
            status=TrialStatus.running,
            attempt=Trial.attempt + 1,
            # unguessable (the batch part) and distinct per trial (the id part)
            lease_token=literal(f"{batch}-") + cast(Trial.id, String),
            lease_expires_at=db_epoch() + lease_seconds,
            worker_id=worker_id,
            stop_requested=False,
            started_at=func.coalesce(Trial.started_at, func.now()),
        )
        .returning(
            Trial.id,
            Trial.number,
            Trial.attempt,
            Trial.config,
            Trial.lease_token,
            Trial.resume_checkpoint_id,
        )
    ).all()
    checkpoint_every = int(study.spec.get("execution", {}).get("checkpoint_every") or 0)
    pruning = PruningSpec(**(study.spec.get("pruning") or {}))
    # Unset fields stay unset, so the trainer applies its own defaults.
    dataset = {k: v for k, v in study.spec.get("dataset", {}).items() if v is not None}
    out: list[Claimed] = []
    for row in sorted(rows, key=lambda r: r.id):
        resume = None
        if row.resume_checkpoint_id is not None:
            resume = _carry_curve(
                s, trial_id=row.id, attempt=row.attempt, checkpoint_id=row.resume_checkpoint_id
            )
        emit(
            s,
            study_id=study_id,
            type="trial.started",
            trial_id=row.id,
            number=row.number,
            attempt=row.attempt,
            worker_id=worker_id,
        )
        out.append(
            Claimed(
                trial_id=row.id,
                study_id=study_id,
                number=row.number,
                attempt=row.attempt,
                lease_token=row.lease_token,
                config=row.config,
                dataset=dataset,
                checkpoint_every=checkpoint_every,
                resume=resume,
                # ASHA decides at its rungs: the worker reports those epochs at once, so
                # a trial stops at the rung rather than at its next periodic report.
                report_at=(
                    rungs(pruning, int(row.config.get("epochs") or 0))
                    if pruning.type == "asha"
                    else []
                ),
            )
        )
    if out:
        values: dict[str, Any] = {"last_claim_at": db_epoch()}
        if study.status == StudyStatus.queued:
            values.update(status=StudyStatus.running, started_at=func.now())
        s.execute(
            update(Study)
            .where(
                Study.id == study_id, Study.status.in_([StudyStatus.queued, StudyStatus.running])
            )
            .values(**values)
        )
    return out


def _carry_curve(s: Session, *, trial_id: int, attempt: int, checkpoint_id: int) -> dict[str, Any]:
    """Copy the curve up to a checkpoint into the attempt that starts from it.

    The new attempt then holds one continuous curve, whether it resumes its own trial or
    forks another, so its objective, its plot and pruning need no special case.
    """
    ckpt = s.get(Checkpoint, checkpoint_id)
    assert ckpt is not None
    columns = [getattr(Metric, k) for k in METRIC_FIELDS]
    s.execute(
        insert(Metric).from_select(
            ["trial_id", "attempt", "epoch", *METRIC_FIELDS],
            select(literal(trial_id), literal(attempt), Metric.epoch, *columns).where(
                Metric.trial_id == ckpt.trial_id,
                Metric.attempt == ckpt.attempt,
                Metric.epoch <= ckpt.epoch,
            ),
        )
    )
    s.execute(update(Trial).where(Trial.id == trial_id).values(epochs_done=ckpt.epoch))
    return {"checkpoint_id": ckpt.id, "epoch": ckpt.epoch}


def _touch_worker(s: Session, worker_id: str) -> None:
    s.execute(update(Worker).where(Worker.id == worker_id).values(last_heartbeat=db_epoch()))


def _leased(s: Session, trial_id: int, token: str) -> Trial:
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
    if trial is None:
        raise NotFound(f"trial {trial_id} does not exist")
    if trial.status != TrialStatus.running or trial.lease_token != token:
        raise LeaseLost(f"trial {trial_id}: the lease is no longer held (status {trial.status})")
    return trial


def heartbeat(*, db: Database, trial_id: int, lease_token: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether the trial has been asked to stop."""
    with db.session() as s:
        stop = s.execute(
            update(Trial)
            .where(
                Trial.id == trial_id,
                Trial.status == TrialStatus.running,
                Trial.lease_token == lease_token,
            )
            .values(lease_expires_at=db_epoch() + lease_seconds)
            .returning(Trial.stop_requested, Trial.worker_id)
        ).one_or_none()
        if stop is None:
            _leased(s, trial_id, lease_token)  # raises the precise error
        assert stop is not None
        if stop.worker_id:
            _touch_worker(s, stop.worker_id)
        return bool(stop.stop_requested)


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _insert_metrics(s: Session, *, trial: Trial, epochs: Sequence[Mapping[str, Any]]) -> int:
    """Store epochs of the trial's current attempt; returns the last epoch now done.

    The trial row is not touched here: callers fold `epochs_done` into the one UPDATE
    they make anyway.
    """
    rows = [
        {
            "trial_id": trial.id,
            "attempt": trial.attempt,
            "epoch": int(e["epoch"]),
            **{k: _clean(e.get(k)) for k in METRIC_FIELDS},
        }
        for e in epochs
    ]
    if not rows:
        return trial.epochs_done
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # A re-sent batch (the worker retried after a lost response) is ignored, not doubled.
    stmt = insert(Metric).on_conflict_do_nothing(index_elements=["trial_id", "attempt", "epoch"])
    s.execute(stmt, rows)
    # epochs count from 1, as the trainer's; a late, re-sent batch never lowers it
    return max(trial.epochs_done, *(int(e["epoch"]) for e in epochs))


def report_metrics(
    *,
    db: Database,
    trial_id: int,
    lease_token: str,
    epochs: Sequence[Mapping[str, Any]],
    lease_seconds: float,
) -> bool:
    """Store a batch of epochs of the current attempt; returns whether to stop."""
    with db.session() as s:
        trial = _leased(s, trial_id, lease_token)
        done = _insert_metrics(s, trial=trial, epochs=epochs)
        if epochs:
            latest = max(epochs, key=lambda e: int(e["epoch"]))
            emit(
                s,
                study_id=trial.study_id,
                type="trial.metrics",
                trial_id=trial_id,
                attempt=trial.attempt,
                **{
                    "epoch": int(latest["epoch"]),
                    **{k: _clean(latest.get(k)) for k in METRIC_FIELDS},
                },
            )
        values: dict[str, Any] = {"lease_expires_at": db_epoch() + lease_seconds}
        values["epochs_done"] = done
        stop = bool(trial.stop_requested)
        if epochs and not stop:
            reason = _prune_reason(s, trial=trial, epochs=[int(e["epoch"]) for e in epochs])
            if reason is not None:
                values.update(stop_requested=True, stop_reason="prune", prune_reason=reason)
                emit(
                    s,
                    study_id=trial.study_id,
                    type="trial.stop_requested",
                    trial_id=trial_id,
                    reason=reason,
                )
                stop = True
        s.execute(update(Trial).where(Trial.id == trial_id).values(**values))
        return stop


# A study's pruning block never changes either.
_PRUNING: dict[tuple[str, int], PruningSpec | None] = {}


def _prune_reason(s: Session, *, trial: Trial, epochs: Sequence[int]) -> str | None:
    """Ask the study's pruner about each reported epoch, in order; the first reason wins.

    The decision is made here, in the transaction that stores the trial's epochs, from
    what is stored: the trial's lease serializes its reports, so each is judged once.
    """
    key = (str(s.get_bind().engine.url), trial.study_id)
    if key not in _PRUNING:
        block = s.scalar(select(Study.spec).where(Study.id == trial.study_id)) or {}
        spec = PruningSpec(**(block.get("pruning") or {}))
        _PRUNING[key] = spec if spec.type != "none" else None
    pruning = _PRUNING[key]
    if pruning is None:
        return None
    metric, direction, _ = study_objective(s, trial.study_id)
    column = getattr(Metric, metric)
    last = max(epochs)
    rows = s.execute(
        select(Metric.trial_id, Metric.epoch, column)
        .join(Trial, and_(Trial.id == Metric.trial_id, Trial.attempt == Metric.attempt))
        .where(Trial.study_id == trial.study_id, Metric.epoch <= last)
    ).all()
    curves: dict[int, dict[int, float]] = {}
    for trial_id, epoch, value in rows:
        curves.setdefault(trial_id, {})[epoch] = float("nan") if value is None else value
    mine = curves.pop(trial.id, {})
    total = int(trial.config.get("epochs") or 0) or None
    for epoch in sorted(epochs):
        reason = should_prune(
            pruning=pruning,
            direction=direction,  # type: ignore[arg-type]
            trial_id=trial.id,
            curve=mine,
            others=curves,
            epoch=epoch,
            epochs=total,
        )
        if reason is not None:
            return reason
    return None


# A study's objective never changes, so the finish path reads it once per process.
_OBJECTIVES: dict[tuple[str, int], tuple[str, str, str]] = {}


def study_objective(s: Session, study_id: int) -> tuple[str, str, str]:
    """(metric, direction, at) of a study."""
    key = (str(s.get_bind().engine.url), study_id)
    found = _OBJECTIVES.get(key)
    if found is None:
        row = s.execute(
            select(Study.metric, Study.direction, Study.spec).where(Study.id == study_id)
        ).one()
        at = row.spec.get("objective", {}).get("at", "last")
        found = _OBJECTIVES[key] = (row.metric, row.direction, at)
    return found


def objective_value_sql(
    *, trial_id: int, attempt: int, metric: str, direction: str, at: str
) -> Any:
    """The objective of one attempt of a trial, as a scalar subquery over its metrics."""
    column = getattr(Metric, metric)
    where = (Metric.trial_id == trial_id, Metric.attempt == attempt, column.is_not(None))
    if at == "best":
        agg = func.max(column) if direction == "maximize" else func.min(column)
        return select(agg).where(*where).scalar_subquery()
    return select(column).where(*where).order_by(Metric.epoch.desc()).limit(1).scalar_subquery()


def finish_trial(
    *,
    db: Database,
    trial_id: int,
    lease_token: str,
    outcome: str,
    error: str | None = None,
    epochs: Sequence[Mapping[str, Any]] = (),
) -> TrialStatus:
    """Record a trial's end: its last epochs, its objective value, its status.

    `outcome` is the trainer's: completed, diverged, stopped; or failed (an exception).
    A diverged trial is `failed` with the reason and keeps its curve; its value stays
    empty, so it ranks below every trial that finished.
    """
    with db.session() as s:
        study_id, status = _finish(
            s,
            trial_id=trial_id,
            lease_token=lease_token,
            outcome=outcome,
            error=error,
            epochs=epochs,
        )
        after_trial_finished(s, study_id=study_id)
        return status


def finish_trials(*, db: Database, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Record several trials' ends in one transaction (short trials, reported together).

    A result whose lease was lost is refused alone, before anything of it is written
    (the lease is checked first, under a row lock): the answer says, per trial, its new
    status, or why it was refused.
    """
    answers: list[dict[str, Any]] = []
    studies: set[int] = set()
    with db.session() as s:
        for r in results:
            trial_id = int(r["trial_id"])
            try:
                study_id, status = _finish(
                    s,
                    trial_id=trial_id,
                    lease_token=r["lease_token"],
                    outcome=r["outcome"],
                    error=r.get("error"),
                    epochs=r.get("epochs", ()),
                )
            except (LeaseLost, NotFound) as exc:
                answers.append({"trial_id": trial_id, "status": None, "error": exc.detail})
                continue
            answers.append({"trial_id": trial_id, "status": status.value, "error": None})
            studies.add(study_id)
        for study_id in sorted(studies):  # a fixed order: no deadlock between replicas
            after_trial_finished(s, study_id=study_id)
    return answers


def _finish(
    s: Session,
    *,
    trial_id: int,
    lease_token: str,
    outcome: str,
    error: str | None,
    epochs: Sequence[Mapping[str, Any]],
) -> tuple[int, TrialStatus]:
    """What a finish changes in the trial, its metrics and its event; returns its study."""
    trial = _leased(s, trial_id, lease_token)
    if outcome == "stopped" and trial.stop_reason in ("pause", "prune"):
        outcome = "paused" if trial.stop_reason == "pause" else "pruned"
    status = {
        "completed": TrialStatus.completed,
        "stopped": TrialStatus.stopped,
        "pruned": TrialStatus.pruned,
        "paused": TrialStatus.paused,
    }.get(outcome, TrialStatus.failed)
    done = _insert_metrics(s, trial=trial, epochs=epochs)
    if outcome == "diverged" and not error:
        error = f"diverged after {done} epochs: the cost or a gradient was not finite"
    value: Any = None
    if status not in (TrialStatus.failed, TrialStatus.paused):
        metric, direction, at = study_objective(s, trial.study_id)
        value = objective_value_sql(
            trial_id=trial_id, attempt=trial.attempt, metric=metric, direction=direction, at=at
        )
    stored = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.lease_token == lease_token)
        .values(
            status=status,
            outcome=outcome,
            value=value,
            epochs_done=done,
            error=error[:4000] if error else None,
            lease_token=None,
            lease_expires_at=None,
            stop_requested=False,
            finished_at=None if status == TrialStatus.paused else func.now(),
        )
        .returning(Trial.value)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    if trial.worker_id:
        s.execute(
            update(Worker)
            .where(Worker.id == trial.worker_id)
            .values(trials_done=Worker.trials_done + 1, last_heartbeat=db_epoch())
        )
    emit(
        s,
        study_id=trial.study_id,
        type="trial.paused" if status == TrialStatus.paused else "trial.finished",
        trial_id=trial_id,
        number=trial.number,
        status=status.value,
        outcome=outcome,
        value=stored,
        epochs_done=done,
        error=error,
    )
    return trial.study_id, status


def release_trial(*, db: Database, trial_id: int, lease_token: str) -> None:
    """Hand a trial back to the queue without counting a retry (a worker shutting down)."""
    with db.session() as s:
        trial = _leased(s, trial_id, lease_token)
        emit(s, study_id=trial.study_id, type="trial.released", trial_id=trial_id)
        s.execute(
            update(Trial)
            .where(Trial.id == trial_id, Trial.lease_token == lease_token)
            .values(
                status=TrialStatus.queued,
                lease_token=None,
                lease_expires_at=None,
                worker_id=None,
            )
        )


def reap_expired(*, db: Database) -> int:
    """Requeue (or fail, past max_retries) every running trial whose lease expired."""
    moved = 0
    with db.session() as s:
        stale = s.execute(
            select(Trial.id, Trial.lease_token, Trial.retries, Study.max_retries, Trial.study_id)
            .join(Study, Study.id == Trial.study_id)
            .where(Trial.status == TrialStatus.running, Trial.lease_expires_at < db_epoch())
        ).all()
        touched: set[int] = set()
        for row in stale:
            guard = (
                Trial.id == row.id,
                Trial.status == TrialStatus.running,
                Trial.lease_token == row.lease_token,
            )
            if row.retries < row.max_retries:
                values: dict[str, Any] = {
                    "status": TrialStatus.queued,
                    "retries": Trial.retries + 1,
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
                touched.add(row.study_id)
            values.update(lease_token=None, lease_expires_at=None, worker_id=None)
            result = s.execute(update(Trial).where(*guard).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another reaper moved it first
            moved += 1
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
        for study_id in touched:
            after_trial_finished(s, study_id=study_id)
    return moved


def is_terminal(status: TrialStatus) -> bool:
    return status in TERMINAL_TRIAL
