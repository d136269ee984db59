"""The trial queue: claim with a lease, heartbeat, report, finish, release and reap.

Every transition is a compare-and-set on (id, status, lease_token): the loser of a race
changes nothing and is told so (LeaseLost), so a trial's result is stored exactly once
however many workers, reapers or replicas touch it.
"""

from __future__ import annotations

import math
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import CaviarError, LeaseLost, NotFound
from service.events import emit, emit_many
from service.models import (
    METRIC_FIELDS,
    TERMINAL_TRIAL,
    Checkpoint,
    Metric,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
    Worker,
)
from service.search.pruners import decision_epochs, should_prune
from service.spec import PruningSpec
from service.studies.rounds import after_trial_finished


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
    # At least this many seconds between periodic checkpoints (0: every checkpoint_every
    # epochs). A caviar study's checkpoints are for a requeued trial to resume and a
    # finished one to go on, not for forks from any epoch: one per few seconds is enough.
    checkpoint_seconds: float = 0.0
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
    *,
    db: Database,
    worker_id: str,
    max_trials: int,
    lease_seconds: float,
    caviar_checkpoint_seconds: float = 0.0,
) -> list[Claimed]:
    """Lease up to `max_trials` queued trials to `worker_id`.

    Studies are served oldest-waiting first (the one whose last claim is oldest), which is
    round-robin across studies; `max_parallel` and panda's one-at-a-time are enforced
    under a lock on the study row, so two replicas cannot both take the last free slot.
    """
    claimed: list[Claimed] = []
    with db.session() as s:
        conn = s.connection()
        conn.execute(_TOUCH_WORKER, {"b_worker": worker_id})
        if conn.dialect.name == "postgresql":
            # The study rows stay locked to the end of the transaction: a replica that
            # finds one locked serves another study, and max_parallel is counted under
            # the lock, so two replicas cannot both fill the last free slot. NO KEY
            # UPDATE, not UPDATE: see rounds.after_trial_finished.
            studies = conn.execute(_CANDIDATES_SKIP_LOCKED).all()
            if not studies:
                # Every study with work is locked by a short claim or finish: wait for
                # one rather than send the worker to sleep with work in the queue.
                studies = conn.execute(_CANDIDATES_WAIT).all()
        else:
            studies = conn.execute(_CANDIDATES).all()
        for study in studies:
            if len(claimed) >= max_trials:
                break
            claimed.extend(
                _claim_from_study(
                    s,
                    study=study,
                    worker_id=worker_id,
                    want=max_trials - len(claimed),
                    lease_seconds=lease_seconds,
                    caviar_checkpoint_seconds=caviar_checkpoint_seconds,
                )
            )
    return claimed


def trials_waiting(*, db: Database) -> bool:
    """Whether queued trials wait for a free slot (an open study at its `max_parallel`, a
    panda study running its one trial): a claim that came back empty does not mean the
    queue is empty. Trials of a study awaiting a person's review do not count."""
    with db.session(write=False) as s:
        return bool(s.connection().execute(_WAITING).scalar())


# Core tables, not the ORM entities: the hot paths need no identity map or unit of work.
_S: Table = Study.__table__  # type: ignore[assignment]
_T: Table = Trial.__table__  # type: ignore[assignment]
_M: Table = Metric.__table__  # type: ignore[assignment]
_W: Table = Worker.__table__  # type: ignore[assignment]

_TOUCH_WORKER = update(_W).where(_W.c.id == bindparam("b_worker")).values(last_heartbeat=db_epoch())
# An open study, not waiting for a person's review, with a queued trial: what a claim
# serves, and what an empty claim reports as waiting (see trials_waiting).
_SERVABLE = (
    _S.c.status.in_([StudyStatus.queued, StudyStatus.running]),
    _S.c.awaiting_review.is_(False),
    exists().where(and_(_T.c.study_id == _S.c.id, _T.c.status == TrialStatus.queued)),
)
_CANDIDATES = (
    select(_S.c.id, _S.c.mode, _S.c.max_parallel, _S.c.status, _S.c.spec)
    .where(*_SERVABLE)
    .order_by(_S.c.last_claim_at.asc().nulls_first(), _S.c.id)
    .limit(16)
)
_CANDIDATES_SKIP_LOCKED = _CANDIDATES.with_for_update(skip_locked=True, of=_S, key_share=True)
_WAITING = select(exists().where(*_SERVABLE))
_CANDIDATES_WAIT = _CANDIDATES.limit(1).with_for_update(of=_S, key_share=True)
_COUNT_RUNNING = (
    select(func.count())
    .select_from(_T)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.running)
)
# One statement takes the trials: a CTE picks queued rows (on PostgreSQL locking them
# FOR UPDATE SKIP LOCKED, so replicas pass over each other's picks instead of waiting)
# and the UPDATE ... RETURNING leases them. SQLite, whose write transactions are serial
# under BEGIN IMMEDIATE, runs the same statement without the lock clause.
_PICKED = (
    select(_T.c.id)
    .where(_T.c.study_id == bindparam("b_study"), _T.c.status == TrialStatus.queued)
    .order_by(_T.c.id)
    .limit(bindparam("b_limit", type_=Integer))
    .with_for_update(skip_locked=True)
    .cte("picked")
)
_LEASE = (
    update(_T)
    .where(_T.c.id.in_(select(_PICKED.c.id)), _T.c.status == TrialStatus.queued)
    .values(
        status=TrialStatus.running,
        attempt=_T.c.attempt + 1,
        # unguessable (the batch part) and distinct per trial (the id part)
        lease_token=bindparam("b_batch", type_=String) + cast(_T.c.id, String),
        lease_expires_at=db_epoch() + bindparam("b_lease", type_=Float),
        worker_id=bindparam("b_worker", type_=String),
        stop_requested=False,
        started_at=func.coalesce(_T.c.started_at, func.now()),
    )
    .returning(
        _T.c.id,
        _T.c.number,
        _T.c.attempt,
        _T.c.config,
        _T.c.lease_token,
        _T.c.resume_checkpoint_id,
    )
)
# The claim stamp orders studies for the next claim (oldest first). Claims come faster
# than the clock ticks (SQLite's has milliseconds), so a stamp is also later than every
# other open study's: two claims in one tick still hand out studies in turn.
_LAST_STAMP = (
    select(func.max(_S.c.last_claim_at) + 1e-6)
    .where(_S.c.status.in_([StudyStatus.queued, StudyStatus.running]))
    .scalar_subquery()
)
_STUDY_CLAIMED = (
    update(_S)
    .where(
        _S.c.id == bindparam("b_study"),
        _S.c.status.in_([StudyStatus.queued, StudyStatus.running]),
    )
    .values(last_claim_at=case((db_epoch() < _LAST_STAMP, _LAST_STAMP), else_=db_epoch()))
)
_STUDY_STARTED = _STUDY_CLAIMED.values(status=StudyStatus.running, started_at=func.now())


def _claim_from_study(
    s: Session,
    *,
    study: Any,
    worker_id: str,
    want: int,
    lease_seconds: float,
    caviar_checkpoint_seconds: float = 0.0,
) -> list[Claimed]:
    conn = s.connection()
    cap = 1 if study.mode == "panda" else study.max_parallel
    running = conn.execute(_COUNT_RUNNING, {"b_study": study.id}).scalar()
    free = cap - (running or 0)
    if free <= 0:
        return []
    rows = conn.execute(
        _LEASE,
        {
            "b_study": study.id,
            "b_limit": min(free, want),
            "b_batch": f"{secrets.token_hex(16)}-",
            "b_lease": lease_seconds,
            "b_worker": worker_id,
        },
    ).all()
    if not rows:
        return []
    spec = study.spec
    checkpoint_every = int(spec.get("execution", {}).get("checkpoint_every") or 0)
    pruning = _pruning_spec(s, study.id, spec)
    # Unset fields stay unset, so the trainer applies its own defaults.
    dataset = {k: v for k, v in spec.get("dataset", {}).items() if v is not None}
    out: list[Claimed] = []
    for row in sorted(rows, key=lambda r: r.id):
        resume = None
        if row.resume_checkpoint_id is not None:
            resume = _carry_curve(
                s, trial_id=row.id, attempt=row.attempt, checkpoint_id=row.resume_checkpoint_id
            )
        out.append(
            Claimed(
                trial_id=row.id,
                study_id=study.id,
                number=row.number,
                attempt=row.attempt,
                lease_token=row.lease_token,
                config=row.config,
                dataset=dataset,
                checkpoint_every=checkpoint_every,
                checkpoint_seconds=caviar_checkpoint_seconds if study.mode == "caviar" else 0.0,
                resume=resume,
                # Pruning decides at these epochs (ASHA's rungs, the median rule's evenly
                # spaced ones): the worker reports them at once, so a trial stops there
                # rather than at its next periodic report, or never if it is short.
                report_at=(
                    decision_epochs(pruning, int(row.config.get("epochs") or 0))
                    if pruning is not None
                    else []
                ),
            )
        )
    emit_many(
        s,
        [
            {
                "study_id": study.id,
                "type": "trial.started",
                "trial_id": c.trial_id,
                "data": {"number": c.number, "attempt": c.attempt, "worker_id": worker_id},
            }
            for c in out
        ],
    )
    started = study.status == StudyStatus.queued
    conn.execute(_STUDY_STARTED if started else _STUDY_CLAIMED, {"b_study": study.id})
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
    s.connection().execute(_TOUCH_WORKER, {"b_worker": worker_id})


def lease_problem(trial_id: int, row: Any, token: str) -> NotFound | LeaseLost | None:
    """Why `token` may not write for trial `trial_id`, or None if it holds the lease.

    `row` is the trial as read (anything with `status` and `lease_token`), None if absent.
    """
    if row is None:
        return NotFound(f"trial {trial_id} does not exist")
    if row.status != TrialStatus.running or row.lease_token != token:
        return LeaseLost(f"trial {trial_id}: the lease is no longer held (status {row.status})")
    return None


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
    if problem := lease_problem(trial_id, trial, token):
        raise problem
    assert trial is not None
    return trial


_HEARTBEAT = (
    update(_T)
    .where(
        _T.c.id == bindparam("b_id"),
        _T.c.status == TrialStatus.running,
        _T.c.lease_token == bindparam("b_token"),
    )
    .values(lease_expires_at=db_epoch() + bindparam("b_lease", type_=Float))
    .returning(_T.c.stop_requested, _T.c.worker_id)
)


def heartbeat(*, db: Database, trial_id: int, lease_token: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether the trial has been asked to stop."""
    with db.session() as s:
        conn = s.connection()
        stop = conn.execute(
            _HEARTBEAT, {"b_id": trial_id, "b_token": lease_token, "b_lease": lease_seconds}
        ).one_or_none()
        if stop is None:
            _leased(s, trial_id, lease_token)  # raises the precise error
        assert stop is not None
        if stop.worker_id:
            conn.execute(_TOUCH_WORKER, {"b_worker": stop.worker_id})
        return bool(stop.stop_requested)


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _insert_metrics(s: Session, *, trial: Any, epochs: Sequence[Mapping[str, Any]]) -> int:
    """Store epochs of the trial's current attempt; returns the last epoch now done.

    The trial row is not touched here: callers fold `epochs_done` into the one UPDATE
    they make anyway.
    """
    rows = _metric_rows(trial.id, trial.attempt, epochs)
    if not rows:
        return int(trial.epochs_done)
    conn = s.connection()
    conn.execute(_METRIC_INSERTS[conn.dialect.name], rows)
    # epochs count from 1, as the trainer's; a late, re-sent batch never lowers it
    return max(trial.epochs_done, *(int(e["epoch"]) for e in epochs))


# The one trial a metrics report is about, locked as `_leased` locks it.
_LOCK_REPORTING = (
    select(
        _T.c.id,
        _T.c.status,
        _T.c.lease_token,
        _T.c.attempt,
        _T.c.study_id,
        _T.c.config,
        _T.c.stop_requested,
        _T.c.epochs_done,
    )
    .where(_T.c.id == bindparam("b_id"))
    .with_for_update(key_share=True)
)
_REPORTED = (
    update(_T)
    .where(_T.c.id == bindparam("b_id"))
    .values(
        lease_expires_at=db_epoch() + bindparam("b_lease", type_=Float),
        epochs_done=bindparam("b_done"),
    )
)


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
        conn = s.connection()
        trial = conn.execute(_LOCK_REPORTING, {"b_id": trial_id}).one_or_none()
        if problem := lease_problem(trial_id, trial, lease_token):
            raise problem
        assert trial is not None
        done = _insert_metrics(s, trial=trial, epochs=epochs)
        events: list[dict[str, Any]] = []
        if epochs:
            latest = max(epochs, key=lambda e: int(e["epoch"]))
            events.append(
                {
                    "study_id": trial.study_id,
                    "type": "trial.metrics",
                    "trial_id": trial_id,
                    "data": {
                        "attempt": trial.attempt,
                        "epoch": int(latest["epoch"]),
                        **{k: _clean(latest.get(k)) for k in METRIC_FIELDS},
                    },
                }
            )
        stop = bool(trial.stop_requested)
        if epochs and not stop:
            reason = _prune_reason(s, trial=trial, epochs=[int(e["epoch"]) for e in epochs])
            if reason is not None:
                s.execute(
                    update(Trial)
                    .where(Trial.id == trial_id)
                    .values(stop_requested=True, stop_reason="prune", prune_reason=reason)
                    .execution_options(synchronize_session=False)
                )
                events.append(
                    {
                        "study_id": trial.study_id,
                        "type": "trial.stop_requested",
                        "trial_id": trial_id,
                        "data": {"reason": reason},
                    }
                )
                stop = True
        emit_many(s, events)
        conn.execute(_REPORTED, {"b_id": trial_id, "b_lease": lease_seconds, "b_done": done})
        return stop


# A study's pruning block never changes either.
_PRUNING: dict[tuple[str, int], PruningSpec | None] = {}


def _pruning_spec(
    s: Session, study_id: int, spec: Mapping[str, Any] | None = None
) -> PruningSpec | None:
    """The study's pruning block (None without pruning), parsed once per process."""
    key = (str(s.get_bind().engine.url), study_id)
    if key not in _PRUNING:
        if spec is None:
            spec = s.scalar(select(Study.spec).where(Study.id == study_id)) or {}
        pruning = PruningSpec(**(spec.get("pruning") or {}))
        _PRUNING[key] = pruning if pruning.type != "none" else None
    return _PRUNING[key]


def _prune_reason(s: Session, *, trial: Any, epochs: Sequence[int]) -> str | None:
    """Ask the study's pruner about each reported epoch, in order; the first reason wins.

    The decision is made here, in the transaction that stores the trial's epochs, from
    what is stored: the trial's lease serializes its reports, so each is judged once.
    """
    pruning = _pruning_spec(s, trial.study_id)
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
    *, trial_id: Any, attempt: Any, metric: str, direction: str, at: str
) -> Any:
    """The objective of one attempt of a trial, as a scalar subquery over its metrics.

    `trial_id` and `attempt` are values or bind parameters (an executemany's).
    """
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
    result = {
        "trial_id": trial_id,
        "lease_token": lease_token,
        "outcome": outcome,
        "error": error,
        "epochs": epochs,
    }
    with db.session() as s:
        [answer], studies = _finish_many(s, [result])
        if isinstance(answer, CaviarError):
            raise answer
        for study_id in studies:
            after_trial_finished(s, study_id=study_id)
        return answer


def finish_trials(*, db: Database, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Record several trials' ends in one transaction (short trials, reported together).

    A result whose lease was lost is refused alone, before anything of it is written
    (the leases are checked first, under row locks): the answer says, per trial, its new
    status, or why it was refused.
    """
    with db.session() as s:
        answers, studies = _finish_many(s, results)
        for study_id in sorted(studies):  # a fixed order: no deadlock between replicas
            after_trial_finished(s, study_id=study_id)
    return [
        {"trial_id": int(r["trial_id"]), "status": None, "error": a.detail}
        if isinstance(a, CaviarError)
        else {"trial_id": int(r["trial_id"]), "status": a.value, "error": None}
        for r, a in zip(results, answers, strict=True)
    ]


# The trials of a batch, locked in id order (replicas finishing overlapping batches take
# the locks in one order, so they cannot deadlock), FOR NO KEY UPDATE as `_leased`.
_LOCK_TRIALS = (
    select(
        _T.c.id,
        _T.c.status,
        _T.c.lease_token,
        _T.c.attempt,
        _T.c.study_id,
        _T.c.number,
        _T.c.stop_reason,
        _T.c.worker_id,
        _T.c.epochs_done,
    )
    .where(_T.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_T.c.id)
    .with_for_update(key_share=True)
)
_STORED_VALUES = select(_T.c.id, _T.c.value).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_WORKER_DONE = (
    update(_W)
    .where(_W.c.id == bindparam("b_worker"))
    .values(trials_done=_W.c.trials_done + bindparam("b_n"), last_heartbeat=db_epoch())
)
_OUTCOME_STATUS = {
    "completed": TrialStatus.completed,
    "stopped": TrialStatus.stopped,
    "pruned": TrialStatus.pruned,
    "paused": TrialStatus.paused,
}
# Finish statements, built once per (objective, kind): executemany over a batch.
_FINISH_STATEMENTS: dict[tuple[str, str, str, str], Any] = {}


def _metric_insert(dialect: str) -> Any:
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # A re-sent batch (the worker retried after a lost response) is ignored, not doubled.
    return insert_(_M).on_conflict_do_nothing(index_elements=["trial_id", "attempt", "epoch"])


_METRIC_INSERTS = {d: _metric_insert(d) for d in ("postgresql", "sqlite")}


def _finish_statement(kind: str, objective: tuple[str, str, str]) -> Any:
    """The UPDATE that ends one trial of a batch, guarded by its lease token.

    kind: `valued` (the objective is read from the attempt's stored curve), `failed`
    (no value), `paused` (no value, not finished).
    """
    key = (kind, *objective)
    stmt = _FINISH_STATEMENTS.get(key)
    if stmt is None:
        metric, direction, at = objective
        value: Any = None
        if kind == "valued":
            value = objective_value_sql(
                trial_id=bindparam("b_id"),
                attempt=bindparam("b_attempt"),
                metric=metric,
                direction=direction,
                at=at,
            )
        stmt = _FINISH_STATEMENTS[key] = (
            update(_T)
            .where(
                _T.c.id == bindparam("b_id"),
                _T.c.status == TrialStatus.running,
                _T.c.lease_token == bindparam("b_token"),
            )
            .values(
                status=bindparam("b_status", type_=_T.c.status.type),
                outcome=bindparam("b_outcome"),
                value=value,
                epochs_done=bindparam("b_done"),
                error=bindparam("b_error"),
                lease_token=None,
                lease_expires_at=None,
                stop_requested=False,
                finished_at=None if kind == "paused" else func.now(),
            )
        )
    return stmt


def _finish_many(
    s: Session, results: Sequence[Mapping[str, Any]]
) -> tuple[list[TrialStatus | CaviarError], set[int]]:
    """Store a batch of trial ends, set-based; returns per result its new status or why it
    was refused (LeaseLost, NotFound), and the studies whose trials ended.

    The leases of the whole batch are checked first, under row locks (PostgreSQL) or the
    write lock (SQLite), so no reaper or replica can take one between the check and the
    writes: then one insert for all metrics, one executemany of guarded UPDATEs per kind
    of end, one update per worker, one insert for all events.
    """
    conn = s.connection()
    ids = sorted({int(r["trial_id"]) for r in results})
    rows = {row.id: row for row in conn.execute(_LOCK_TRIALS, {"ids": ids})}
    answers: list[TrialStatus | CaviarError] = []
    metric_rows: list[dict[str, Any]] = []
    updates: dict[tuple[str, tuple[str, str, str]], list[dict[str, Any]]] = {}
    workers: dict[str, int] = {}
    accepted: list[tuple[Any, TrialStatus, str, str | None, int]] = []
    taken: dict[int, TrialStatus] = {}
    for r in results:
        trial_id = int(r["trial_id"])
        row = rows.get(trial_id)
        if trial_id in taken:  # a second result for it in this batch
            shown = taken[trial_id]
            answers.append(
                LeaseLost(f"trial {trial_id}: the lease is no longer held (status {shown})")
            )
            continue
        if problem := lease_problem(trial_id, row, r["lease_token"]):
            answers.append(problem)
            continue
        assert row is not None
        outcome = str(r["outcome"])
        if outcome == "stopped" and row.stop_reason in ("pause", "prune"):
            outcome = "paused" if row.stop_reason == "pause" else "pruned"
        status = _OUTCOME_STATUS.get(outcome, TrialStatus.failed)
        epochs = r.get("epochs") or ()
        metric_rows.extend(_metric_rows(trial_id, row.attempt, epochs))
        # epochs count from 1, as the trainer's; a late, re-sent batch never lowers it
        done = max([row.epochs_done, *(int(e["epoch"]) for e in epochs)])
        error = r.get("error")
        if outcome == "diverged" and not error:
            error = f"diverged after {done} epochs: the cost or a gradient was not finite"
        kind = (
            "paused"
            if status == TrialStatus.paused
            else "failed"
            if status == TrialStatus.failed
            else "valued"
        )
        objective = study_objective(s, row.study_id) if kind == "valued" else ("", "", "")
        updates.setdefault((kind, objective), []).append(
            {
                "b_id": trial_id,
                "b_token": row.lease_token,
                "b_attempt": row.attempt,
                "b_status": status,
                "b_outcome": outcome,
                "b_done": done,
                "b_error": error[:4000] if error else None,
            }
        )
        if row.worker_id:
            workers[row.worker_id] = workers.get(row.worker_id, 0) + 1
        taken[trial_id] = status
        accepted.append((row, status, outcome, error, done))
        answers.append(status)
    if not accepted:
        return answers, set()
    if metric_rows:
        conn.execute(_METRIC_INSERTS[conn.dialect.name], metric_rows)
    for (kind, objective), params in updates.items():
        moved = conn.execute(_finish_statement(kind, objective), params).rowcount
        # The leases were checked under lock: every guarded UPDATE must have matched.
        assert moved in (-1, len(params)), (moved, len(params))
    for worker_id, n in sorted(workers.items()):
        conn.execute(_WORKER_DONE, {"b_worker": worker_id, "b_n": n})
    valued = [row.id for row, status, *_ in accepted if status != TrialStatus.failed]
    stored = (
        {r.id: r.value for r in conn.execute(_STORED_VALUES, {"ids": valued})} if valued else {}
    )
    emit_many(
        s,
        [
            {
                "study_id": row.study_id,
                "type": "trial.paused" if status == TrialStatus.paused else "trial.finished",
                "trial_id": row.id,
                "data": {
                    "number": row.number,
                    "status": status.value,
                    "outcome": outcome,
                    "value": stored.get(row.id),
                    "epochs_done": done,
                    "error": error,
                },
            }
            for row, status, outcome, error, done in accepted
        ],
    )
    return answers, {row.study_id for row, *_ in accepted}


def _metric_rows(trial_id: int, attempt: int, epochs: Iterable[Mapping[str, Any]]) -> list[Any]:
    return [
        {
            "trial_id": trial_id,
            "attempt": attempt,
            "epoch": int(e["epoch"]),
            **{k: _clean(e.get(k)) for k in METRIC_FIELDS},
        }
        for e in epochs
    ]


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
