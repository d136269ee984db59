"""A running trial's reports: heartbeats, metrics, and the pruning decision made on them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Float, and_, bindparam, select, update
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.events import emit_many
from service.models import METRIC_FIELDS, Metric, Study, Trial, TrialStatus
from service.queue.finish import study_objective
from service.queue.leases import lease_problem, leased
from service.queue.results import check_result
from service.queue.tables import (
    TOUCH_WORKER,
    TRIAL_EPOCHS,
    TRIALS,
    insert_metrics,
    metric_column,
)
from service.search.pruners import should_prune
from service.spec import PruningSpec

_HEARTBEAT = (
    update(TRIALS)
    .where(
        TRIALS.c.id == bindparam("b_id"),
        TRIALS.c.status == TrialStatus.running,
        TRIALS.c.lease_token == bindparam("b_token"),
    )
    .values(lease_expires_at=db_epoch() + bindparam("b_lease", type_=Float))
    .returning(TRIALS.c.stop_requested, TRIALS.c.worker_id)
)


def heartbeat(*, db: Database, trial_id: int, lease_token: str, lease_seconds: float) -> bool:
    """Extend the lease; returns whether the trial has been asked to stop."""
    with db.session() as s:
        conn = s.connection()
        stop = conn.execute(
            _HEARTBEAT, {"b_id": trial_id, "b_token": lease_token, "b_lease": lease_seconds}
        ).one_or_none()
        if stop is None:
            leased(s, trial_id, lease_token)  # raises the precise error
        assert stop is not None
        if stop.worker_id:
            conn.execute(TOUCH_WORKER, {"b_worker": stop.worker_id})
        return bool(stop.stop_requested)


# The one trial a metrics report is about, locked as `leased` locks it.
_LOCK_REPORTING = (
    select(
        TRIALS.c.id,
        TRIALS.c.status,
        TRIALS.c.lease_token,
        TRIALS.c.attempt,
        TRIALS.c.study_id,
        TRIALS.c.config,
        TRIALS.c.stop_requested,
        TRIALS.c.epochs_done,
        TRIAL_EPOCHS,
    )
    .where(TRIALS.c.id == bindparam("b_id"))
    .with_for_update(key_share=True)
)
_REPORTED = (
    update(TRIALS)
    .where(TRIALS.c.id == bindparam("b_id"))
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
    epochs: Sequence[Any],
    lease_seconds: float,
    curve: Mapping[str, Any] | None = None,
) -> bool:
    """Store a batch of epochs of the current attempt, as rows (`epochs`) or columns
    (`curve`), as read from JSON; returns whether to stop. ResultError if they are
    invalid or beyond the trial's (checked once the lease holds)."""
    with db.session() as s:
        conn = s.connection()
        trial = conn.execute(_LOCK_REPORTING, {"b_id": trial_id}).one_or_none()
        if problem := lease_problem(trial_id, trial, lease_token):
            raise problem
        assert trial is not None
        rows = check_result(
            trial_id=trial_id,
            attempt=trial.attempt,
            epochs=trial.total_epochs,
            result={"epochs": epochs, "curve": curve},
        ).metrics
        insert_metrics(conn, rows)
        # epochs count from 1, as the trainer's; a late, re-sent batch never lowers it
        done = max([trial.epochs_done, *(r[2] for r in rows)])
        events: list[dict[str, Any]] = []
        if rows:
            latest = max(rows, key=lambda r: r[2])
            events.append(
                {
                    "study_id": trial.study_id,
                    "type": "trial.metrics",
                    "trial_id": trial_id,
                    "data": {
                        "attempt": trial.attempt,
                        "epoch": latest[2],
                        **dict(zip(METRIC_FIELDS, latest[3:-1], strict=True)),
                        **(json.loads(latest[-1]) if latest[-1] else {}),
                    },
                }
            )
        stop = bool(trial.stop_requested)
        if rows and not stop:
            reason = _prune_reason(s, trial=trial, epochs=[r[2] for r in rows])
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


def pruning_spec(
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
    pruning = pruning_spec(s, trial.study_id)
    if pruning is None:
        return None
    metric, direction, _ = study_objective(s, trial.study_id)
    column = metric_column(metric)
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
