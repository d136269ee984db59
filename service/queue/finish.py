"""Finishing trials: their last epochs, objective value and status, alone or in a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    Text,
    bindparam,
    column,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import CaviarError, LeaseLost
from service.events import emit_many
from service.models import Metric, Study, TrialStatus
from service.queue.closing import after_trial_finished
from service.queue.leases import lease_problem
from service.queue.pace import PACE
from service.queue.results import Checked, ResultError, check_result, store_checkpoints
from service.queue.tables import (
    STUDIES,
    TRIAL_EPOCHS,
    TRIALS,
    WORKERS,
    insert_metrics,
    metric_column,
)

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
    column = metric_column(metric)
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
    **more: Any,
) -> TrialStatus:
    """Record a trial's end: its last epochs, its objective value, its status.

    `outcome` is the trainer's: completed, diverged, stopped; or failed (an exception).
    A diverged trial is `failed` with the reason and keeps its curve; its value stays
    empty, so it ranks below every trial that finished. `more` holds what a result may
    carry besides (see `finish_trials`).
    """
    result = {
        "trial_id": trial_id,
        "lease_token": lease_token,
        "outcome": outcome,
        "error": error,
        "epochs": epochs,
        **more,
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

    A result is a mapping: trial_id, lease_token, outcome, error; its last epochs as rows
    (`epochs`) and/or columns (`curve`); how long it ran (`seconds`); its last
    `checkpoint` ({epoch, content in base64}). A result whose lease was lost, or that
    does not fit its trial, is refused alone, before anything of it is written (the
    leases are checked first, under row locks): the answer says, per trial, its new
    status, or why it was refused.
    """
    with db.session() as s:
        return finish_in(s, results)


def finish_in(s: Session, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`finish_trials` within the session `s` (a worker's claim finishes, then leases)."""
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
# the locks in one order, so they cannot deadlock), FOR NO KEY UPDATE as `leased`.
_LOCK_TRIALS = (
    select(
        TRIALS.c.id,
        TRIALS.c.status,
        TRIALS.c.lease_token,
        TRIALS.c.attempt,
        TRIALS.c.study_id,
        TRIALS.c.number,
        TRIALS.c.stop_reason,
        TRIALS.c.worker_id,
        TRIALS.c.epochs_done,
        TRIAL_EPOCHS,
        STUDIES.c.mode,
        STUDIES.c.entrypoint,
    )
    .join(STUDIES, STUDIES.c.id == TRIALS.c.study_id)
    .where(TRIALS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(TRIALS.c.id)
    .with_for_update(of=TRIALS, key_share=True)
)
_STORED_VALUES = select(TRIALS.c.id, TRIALS.c.value).where(
    TRIALS.c.id.in_(bindparam("ids", expanding=True))
)
_WORKER_DONE = (
    update(WORKERS)
    .where(WORKERS.c.id == bindparam("b_worker"))
    .values(trials_done=WORKERS.c.trials_done + bindparam("b_n"), last_heartbeat=db_epoch())
)
_OUTCOME_STATUS = {
    "completed": TrialStatus.completed,
    "stopped": TrialStatus.stopped,
    "pruned": TrialStatus.pruned,
    "paused": TrialStatus.paused,
}
# Finish statements, built once per (database kind, end kind, objective).
_FINISH_STATEMENTS: dict[tuple[bool, str, str, str, str], Any] = {}
# What ends one trial, as the UPDATE takes it: one bind parameter each (`b_` + name) in
# an executemany, one array each (`a_` + name) in PostgreSQL's single statement.
_ENDING_FIELDS = {
    "id": Integer,
    "token": String,
    "attempt": Integer,
    "status": String,
    "outcome": String,
    "done": Integer,
    "error": Text,
    "value": Float,
}


def _finish_statement(kind: str, objective: tuple[str, str, str], *, postgres: bool) -> Any:
    """The UPDATE that ends the trials of a batch, each guarded by its lease token.

    kind: `valued` (the objective is read from the attempt's stored curve), `given` (a
    task's own function returned it: `value`), `failed` (no value), `paused` (no value,
    not finished). Elsewhere an executemany of it, one trial per parameter set; on
    PostgreSQL one statement over arrays (`a_` + field), as psycopg's executemany ran one
    UPDATE per trial, 70 µs of the server's CPU each.
    """
    key = (postgres, kind, *objective)
    stmt = _FINISH_STATEMENTS.get(key)
    if stmt is None:
        fields: dict[str, Any]
        if postgres:
            rows = (
                func.unnest(
                    *(
                        bindparam(f"a_{name}", type_=ARRAY(type_))
                        for name, type_ in _ENDING_FIELDS.items()
                    )
                )
                .table_valued(*(column(name, type_) for name, type_ in _ENDING_FIELDS.items()))
                .render_derived(name="ending")
            )
            fields = {name: rows.c[name] for name in _ENDING_FIELDS}
        else:
            fields = {name: bindparam(f"b_{name}") for name in _ENDING_FIELDS}
        stmt = _FINISH_STATEMENTS[key] = _ending(kind, objective, fields)
    return stmt


def _ending(kind: str, objective: tuple[str, str, str], v: Mapping[str, Any]) -> Any:
    """The guarded UPDATE of `kind` taking each trial's fields from `v`: bind
    parameters, or the columns of a set of rows."""
    metric, direction, at = objective
    value: Any = None
    if kind == "given":
        value = v["value"]
    elif kind == "valued":
        value = objective_value_sql(
            trial_id=v["id"], attempt=v["attempt"], metric=metric, direction=direction, at=at
        )
    return (
        update(TRIALS)
        .where(
            TRIALS.c.id == v["id"],
            TRIALS.c.status == TrialStatus.running,
            TRIALS.c.lease_token == v["token"],
        )
        .values(
            status=type_coerce(v["status"], TRIALS.c.status.type),
            outcome=v["outcome"],
            value=value,
            epochs_done=v["done"],
            error=v["error"],
            lease_token=None,
            lease_expires_at=None,
            stop_requested=False,
            finished_at=None if kind == "paused" else func.now(),
        )
    )


@dataclass(frozen=True)
class _Ended:
    """One accepted result of a batch: the trial as locked, and how it ended."""

    row: Any
    status: TrialStatus
    outcome: str
    error: str | None
    done: int  # the last epoch done
    checked: Checked  # its metrics rows and checkpoint
    value: float | None = None  # what a task's own function returned (None: from the curve)


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
    ids = sorted({int(r["trial_id"]) for r in results})
    rows = {row.id: row for row in s.connection().execute(_LOCK_TRIALS, {"ids": ids})}
    answers: list[TrialStatus | CaviarError] = []
    ended: dict[int, _Ended] = {}
    for r in results:
        trial_id = int(r["trial_id"])
        if trial_id in ended:  # a second result for it in this batch
            shown = ended[trial_id].status
            answers.append(
                LeaseLost(f"trial {trial_id}: the lease is no longer held (status {shown})")
            )
        elif problem := lease_problem(trial_id, rows.get(trial_id), r["lease_token"]):
            answers.append(problem)
        else:
            try:
                ended[trial_id] = _judge(rows[trial_id], r)
            except ResultError as exc:
                answers.append(exc)
                continue
            answers.append(ended[trial_id].status)
    if not ended:
        return answers, set()
    _store(s, list(ended.values()))
    _store_gradient_checks(s, results, ended)
    _emit_ended(s, list(ended.values()))
    _observe(s, results, ended)
    return answers, {e.row.study_id for e in ended.values()}


def _judge(row: Any, result: Mapping[str, Any]) -> _Ended:
    """How the trial of `row` ended, from the worker's result (ResultError if it does not
    fit the trial)."""
    checked = check_result(
        trial_id=row.id,
        attempt=row.attempt,
        epochs=row.total_epochs,
        result=result,
        opaque=row.entrypoint is not None,
    )
    outcome = str(result["outcome"])
    if outcome == "stopped" and row.stop_reason in ("pause", "prune"):
        outcome = "paused" if row.stop_reason == "pause" else "pruned"
    # epochs count from 1, as the trainer's; a late, re-sent batch never lowers it
    done = max(row.epochs_done, checked.last_epoch)
    error = result.get("error")
    if outcome == "diverged" and not error:
        error = f"diverged after {done} epochs: the cost or a gradient was not finite"
    status = _OUTCOME_STATUS.get(outcome, TrialStatus.failed)
    value = result.get("value")
    return _Ended(
        row=row,
        status=status,
        outcome=outcome,
        error=error,
        done=done,
        checked=checked,
        value=float(value) if value is not None else None,
    )


_RAN_TO_END = ("completed", "diverged")  # durations a study's next trials may expect


def _observe(s: Session, results: Sequence[Mapping[str, Any]], ended: dict[int, _Ended]) -> None:
    """Count the durations of the trials that ran to their end in their studies' pace."""
    database = str(s.get_bind().engine.url)
    for r in results:
        e = ended.get(int(r["trial_id"]))
        if e is not None and r.get("seconds") is not None and e.outcome in _RAN_TO_END:
            PACE.observe(database=database, study_id=e.row.study_id, seconds=float(r["seconds"]))


def _store(s: Session, ended: list[_Ended]) -> None:
    """One insert for all metrics, one for all checkpoints, one executemany per kind of
    end, one update per worker."""
    conn = s.connection()
    metrics: list[tuple[Any, ...]] = []
    checkpoints: list[tuple[int, int, int, bytes]] = []
    updates: dict[tuple[str, tuple[str, str, str]], list[dict[str, Any]]] = {}
    workers: dict[str, int] = {}
    for e in ended:
        metrics.extend(e.checked.metrics)
        if e.checked.checkpoint is not None:
            checkpoints.append((e.row.id, e.row.attempt, *e.checked.checkpoint))
        kind = {TrialStatus.paused: "paused", TrialStatus.failed: "failed"}.get(e.status, "valued")
        if kind == "valued" and e.value is not None:
            kind = "given"
        objective = study_objective(s, e.row.study_id) if kind == "valued" else ("", "", "")
        updates.setdefault((kind, objective), []).append(
            {
                "b_id": e.row.id,
                "b_token": e.row.lease_token,
                "b_attempt": e.row.attempt,
                "b_status": e.status.value,
                "b_outcome": e.outcome,
                "b_done": e.done,
                "b_error": e.error[:4000] if e.error else None,
                "b_value": e.value,
            }
        )
        if e.row.worker_id:
            workers[e.row.worker_id] = workers.get(e.row.worker_id, 0) + 1
    # The metrics first: the finish statements read the objective from them.
    insert_metrics(conn, metrics)
    store_checkpoints(conn, checkpoints, caviar={e.row.id for e in ended if e.row.mode == "caviar"})
    postgres = conn.dialect.name == "postgresql"
    for (kind, objective), params in updates.items():
        stmt = _finish_statement(kind, objective, postgres=postgres)
        if postgres:
            arrays = {f"a_{name}": [p[f"b_{name}"] for p in params] for name in _ENDING_FIELDS}
            moved = conn.execute(stmt, arrays).rowcount
        else:
            moved = conn.execute(stmt, params).rowcount
        # The leases were checked under lock: every guarded UPDATE must have matched.
        assert moved in (-1, len(params)), (moved, len(params))
    for worker_id, n in sorted(workers.items()):
        conn.execute(_WORKER_DONE, {"b_worker": worker_id, "b_n": n})


_GRADIENT_CHECK = (
    update(TRIALS)
    .where(TRIALS.c.id == bindparam("b_id"))
    .values(gradient_check=bindparam("b_check", type_=TRIALS.c.gradient_check.type))
)


def _store_gradient_checks(
    s: Session, results: Sequence[Mapping[str, Any]], ended: dict[int, _Ended]
) -> None:
    """Keep the gradient checks the accepted results carry (execution.gradient_check)."""
    checks = [
        {"b_id": int(r["trial_id"]), "b_check": r["gradient_check"]}
        for r in results
        if r.get("gradient_check") is not None and int(r["trial_id"]) in ended
    ]
    if checks:
        s.connection().execute(_GRADIENT_CHECK, checks)


def _emit_ended(s: Session, ended: list[_Ended]) -> None:
    """One trial.finished (trial.paused) event per trial, with the value just stored.

    A checkpoint that came with the result is named in it (`checkpoint_epoch`), not in a
    trial.checkpointed of its own: that was a third of a small trial's events."""
    valued = [e.row.id for e in ended if e.status != TrialStatus.failed]
    conn = s.connection()
    stored = (
        {r.id: r.value for r in conn.execute(_STORED_VALUES, {"ids": valued})} if valued else {}
    )
    emit_many(
        s,
        [
            {
                "study_id": e.row.study_id,
                "type": "trial.paused" if e.status == TrialStatus.paused else "trial.finished",
                "trial_id": e.row.id,
                "data": {
                    "number": e.row.number,
                    "status": e.status.value,
                    "outcome": e.outcome,
                    "value": stored.get(e.row.id),
                    "epochs_done": e.done,
                    "error": e.error,
                    "checkpoint_epoch": (
                        e.checked.checkpoint[0] if e.checked.checkpoint is not None else None
                    ),
                },
            }
            for e in ended
        ],
    )
