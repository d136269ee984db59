"""Study and trial operations behind the API and the CLI: create, read, list, steer."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import orjson
from sqlalchemy import (
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import Database, db_epoch
from service.errors import Conflict, InvalidSpec, NotFound
from service.events import emit
from service.models import (
    METRIC_FIELDS,
    TERMINAL_STUDY,
    TERMINAL_TRIAL,
    Dataset,
    Metric,
    Round,
    Study,
    StudyStatus,
    Trial,
    TrialStatus,
    Worker,
)
from service.settings import Settings
from service.spec import (
    BUILTIN_DATASETS,
    SpecError,
    StudySpec,
    parse_spec,
    plan_round,
    total_rounds,
)
from service.studies.rounds import add_trials, after_trial_finished


def validate_spec(data: Any, *, settings: Settings) -> StudySpec:
    """Parse and validate a spec, or raise InvalidSpec naming every wrong field."""
    try:
        return parse_spec(data, settings=settings)
    except SpecError as exc:
        raise InvalidSpec(errors=exc.errors) from None


def _fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def create_study(
    *,
    db: Database,
    data: Any,
    settings: Settings,
    idempotency_key: str | None = None,
    parent_study_id: int | None = None,
    history: Sequence[tuple[dict[str, Any], float | None]] = (),
) -> int:
    """Validate `data`, expand its first round into trials and queue them, all or nothing.

    `history` (params and value of finished trials, of a parent study) makes a
    coarse-to-fine study start in the box around their best instead of the whole space.
    """
    spec = validate_spec(data, settings=settings)
    box, plans = plan_round(spec, round_index=0, history=list(history))
    stored = spec.model_dump(mode="json")
    with db.session() as s:
        label_column = _check_dataset(s, spec)
        if label_column is not None:  # the worker's copy of the block says how to read the file
            stored["dataset"]["label_column"] = label_column
        fingerprint = _fingerprint(stored)
        if idempotency_key:
            existing = s.execute(
                select(Study.id, Study.spec_sha256).where(Study.idempotency_key == idempotency_key)
            ).first()
            if existing is not None:
                if existing.spec_sha256 == fingerprint:
                    return int(existing.id)
                raise InvalidSpec(
                    errors=[
                        {
                            "loc": "Idempotency-Key",
                            "msg": "this key was already used with a different spec",
                            "input": idempotency_key,
                        }
                    ]
                )
        if parent_study_id is not None and s.get(Study, parent_study_id) is None:
            raise NotFound(f"study {parent_study_id} does not exist")
        study = Study(
            name=spec.name,
            spec=stored,
            status=StudyStatus.queued,
            strategy=spec.strategy.type,
            mode=spec.execution.mode,
            max_parallel=spec.execution.max_parallel,
            max_retries=spec.execution.max_retries,
            metric=spec.objective.metric,
            direction=spec.objective.direction,
            total_rounds=total_rounds(spec),
            current_round=0,
            parent_study_id=parent_study_id,
            idempotency_key=idempotency_key,
            spec_sha256=fingerprint,
        )
        s.add(study)
        try:
            s.flush()
        except IntegrityError:  # the same key raced in from another request
            raise Conflict("a study with this Idempotency-Key is being created") from None
        s.add(Round(study_id=study.id, index=0, box=box))
        add_trials(s, study_id=study.id, round_index=0, plans=plans, first_number=0)
        emit(s, study_id=study.id, type="study.created", name=spec.name, trials=len(plans))
        emit(s, study_id=study.id, type="round.created", index=0, box=box, trials=len(plans))
        return study.id


def check_dataset(*, db: Database, spec: StudySpec) -> None:
    """InvalidSpec unless the spec's data set is built in or uploaded (and readable)."""
    with db.session(write=False) as s:
        _check_dataset(s, spec, lock=False)


def _check_dataset(s: Session, spec: StudySpec, *, lock: bool = True) -> str | None:
    """Check that an uploaded data set exists; its label column (None for built-ins).

    On PostgreSQL the data set's row is share-locked until the study is stored, so a
    concurrent delete (which takes the row's update lock) cannot remove it in between.
    """
    name = spec.dataset.name
    if name in BUILTIN_DATASETS:
        return None
    q = select(Dataset.id, Dataset.label_column, Dataset.format).where(Dataset.id == name)
    row = s.execute(q.with_for_update(read=True) if lock else q).first()
    if row is None:
        raise InvalidSpec(
            errors=[
                {
                    "loc": "dataset.name",
                    "msg": (
                        f"no built-in or uploaded data set named {name!r}; built-ins are "
                        + ", ".join(sorted(BUILTIN_DATASETS))
                    ),
                    "input": name,
                }
            ]
        )
    wanted = spec.dataset.label_column
    if wanted is not None and wanted != row.label_column:
        _check_other_label(s, spec, row)
        return wanted
    return row.label_column or ("y" if row.format == "npz" else None)


def _check_other_label(s: Session, spec: StudySpec, row: Any) -> None:
    """A label column other than the upload's: load the file with it, as a worker will."""
    from service.datasets import load_stored

    try:
        load_stored(s, dataset_id=row.id, label_column=spec.dataset.label_column)
    except ValueError as exc:
        raise InvalidSpec(
            errors=[
                {"loc": "dataset.label_column", "msg": str(exc), "input": spec.dataset.label_column}
            ]
        ) from None


def _study(s: Session, study_id: int) -> Study:
    study = s.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    return study


# Every column a trial's summary shows: all but `config`, a JSON document per trial that
# only the trial's own page needs (decoding it dominated the cost of a trials page).
SUMMARY_COLUMNS = tuple(c for c in Trial.__table__.c if c.name != "config")


def trial_dict(t: Any) -> dict[str, Any]:
    """A trial's summary, from a Trial or a row of SUMMARY_COLUMNS."""
    return {
        "id": t.id,
        "study_id": t.study_id,
        "number": t.number,
        "round": t.round_index,
        "status": t.status.value,
        "params": t.params,
        "value": t.value,
        "attempt": t.attempt,
        "retries": t.retries,
        "epochs_done": t.epochs_done,
        "outcome": t.outcome,
        "error": t.error,
        "worker_id": t.worker_id,
        "parent_trial_id": t.parent_trial_id,
        "fork_epoch": t.fork_epoch,
        "prune_reason": t.prune_reason,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
    }


def best_trial(s: Session, study: Study) -> Trial | None:
    order = Trial.value.desc() if study.direction == "maximize" else Trial.value.asc()
    return s.scalars(
        select(Trial)
        .where(
            Trial.study_id == study.id,
            Trial.status == TrialStatus.completed,
            Trial.value.is_not(None),
        )
        .order_by(order, Trial.id)
        .limit(1)
    ).first()


def study_dict(s: Session, study: Study, *, with_best: bool = True) -> dict[str, Any]:
    """A study's status from its entity, inside a unit of work that changed it.

    The same document as `get_study`, which reads it faster (see "Hot reads" below).
    """
    counts = dict.fromkeys((st.value for st in TrialStatus), 0)
    for status, n in s.execute(
        select(Trial.status, func.count()).where(Trial.study_id == study.id).group_by(Trial.status)
    ):
        counts[TrialStatus(status).value] = n
    best = best_trial(s, study) if with_best else None
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status.value,
        "strategy": study.strategy,
        "mode": study.mode,
        "objective": {
            "metric": study.metric,
            "direction": study.direction,
            "at": study.spec.get("objective", {}).get("at", "last"),
        },
        "rounds": {"current": study.current_round, "total": study.total_rounds},
        "counts": counts,
        "total_trials": sum(counts.values()),
        "best_trial": ({**trial_dict(best), "config": best.config} if best is not None else None),
        "parent_study_id": study.parent_study_id,
        "error": study.error,
        "awaiting_review": study.awaiting_review,
        "created_at": study.created_at,
        "started_at": study.started_at,
        "finished_at": study.finished_at,
        "spec": study.spec,
    }


# -- Hot reads ---------------------------------------------------------------------------------
#
# A study's status and its pages of trials are what every dashboard, `submit --wait` and
# script polls (bench/api_load.py). They are read without the ORM: Core statements built
# once at import (so SQLAlchemy computes their cache key once and finds them compiled), on
# a plain connection, into row tuples: no session, identity map or entities. JSON columns
# are selected as their stored text and parsed by orjson, several times faster than the
# json module SQLAlchemy's JSON type calls; statuses as their stored names.

_S = Study.__table__
_T = Trial.__table__


# A trial's summary (the keys of `trial_dict`, in its order) from the columns below.
_TRIAL_KEYS = (
    "id",
    "study_id",
    "number",
    "round",
    "status",
    "params",
    "value",
    "attempt",
    "retries",
    "epochs_done",
    "outcome",
    "error",
    "worker_id",
    "parent_trial_id",
    "fork_epoch",
    "prune_reason",
    "created_at",
    "started_at",
    "finished_at",
)
_TRIAL_STATUS_NAMES = {s.name: s.value for s in TrialStatus}
_STUDY_STATUS_NAMES = {s.name: s.value for s in StudyStatus}


def _summary_columns(t: Any) -> list[Any]:
    return [
        t.c.id,
        t.c.study_id,
        t.c.number,
        t.c.round_index,
        type_coerce(t.c.status, String),
        cast(t.c.params, Text),
        t.c.value,
        t.c.attempt,
        t.c.retries,
        t.c.epochs_done,
        t.c.outcome,
        t.c.error,
        t.c.worker_id,
        t.c.parent_trial_id,
        t.c.fork_epoch,
        t.c.prune_reason,
        t.c.created_at,
        t.c.started_at,
        t.c.finished_at,
    ]


def _json(text: str | None) -> Any:
    """A JSON column's value from its stored text, as SQLAlchemy's JSON type would read it."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity (json.dumps writes them), or beyond orjson
        return json.loads(text)


def _summary(row: Sequence[Any]) -> dict[str, Any]:
    """`trial_dict` of a row that starts with the summary columns."""
    t = dict(zip(_TRIAL_KEYS, row, strict=False))
    t["status"] = _TRIAL_STATUS_NAMES[t["status"]]
    t["params"] = _json(t["params"])
    return t


def _best_id(direction: str) -> Any:
    """The id of the study's best completed trial (ties: the first), correlated to `_S`."""
    b = _T.alias("b")
    order = b.c.value.desc() if direction == "maximize" else b.c.value.asc()
    return (
        select(b.c.id)
        .where(
            b.c.study_id == _S.c.id,
            b.c.status == TrialStatus.completed,
            b.c.value.is_not(None),
        )
        .order_by(order, b.c.id)
        .limit(1)
        .correlate(_S)
        .scalar_subquery()
    )


def _count_in(status: TrialStatus) -> Any:
    c = _T.alias(f"n_{status.name}")
    return (
        select(func.count())
        .select_from(c)
        .where(c.c.study_id == _S.c.id, c.c.status == status)
        .correlate(_S)
        .scalar_subquery()
    )


_STUDY_KEYS = (
    "id",
    "name",
    "status",
    "strategy",
    "mode",
    "metric",
    "direction",
    "current_round",
    "total_rounds",
    "parent_study_id",
    "error",
    "awaiting_review",
    "created_at",
    "started_at",
    "finished_at",
    "spec",
    "at",
)
_best = _T.alias("best")
# One statement for the whole status: the study, the count of trials in each status (an
# index search each, on ix_trials_study_status), and its best trial joined by primary key.
# One statement is one snapshot, and one round trip on PostgreSQL.
_STUDY_ROWS = select(
    _S.c.id,
    _S.c.name,
    type_coerce(_S.c.status, String),
    _S.c.strategy,
    _S.c.mode,
    _S.c.metric,
    _S.c.direction,
    _S.c.current_round,
    _S.c.total_rounds,
    _S.c.parent_study_id,
    _S.c.error,
    _S.c.awaiting_review,
    _S.c.created_at,
    _S.c.started_at,
    _S.c.finished_at,
    cast(_S.c.spec, Text),
    _S.c.spec[("objective", "at")].as_string(),
    *(_count_in(st) for st in TrialStatus),
    *_summary_columns(_best),
    cast(_best.c.config, Text),
).select_from(
    _S.outerjoin(
        _best,
        _best.c.id
        == case(
            (_S.c.direction == "maximize", _best_id("maximize")),
            else_=_best_id("minimize"),
        ),
    )
)
_STUDY_STATUS = _STUDY_ROWS.where(_S.c.id == bindparam("study_id"))
_N_STUDY = len(_STUDY_KEYS)
_N_COUNTS = len(TrialStatus)


def get_study(*, db: Database, study_id: int) -> dict[str, Any]:
    """A study's status (StudyRead): counts of trials in each status, the best trial."""
    with db.engine.connect() as conn:
        row = conn.execute(_STUDY_STATUS, {"study_id": study_id}).first()
    if row is None:
        raise NotFound(f"study {study_id} does not exist")
    return _study_status(row)


def _study_status(row: Sequence[Any]) -> dict[str, Any]:
    """The status document of a row of _STUDY_ROWS."""
    study = dict(zip(_STUDY_KEYS, row, strict=False))
    counts = dict(
        zip(
            (st.value for st in TrialStatus),
            (n or 0 for n in row[_N_STUDY : _N_STUDY + _N_COUNTS]),
            strict=True,
        )
    )
    best_row = row[_N_STUDY + _N_COUNTS :]
    best = None
    if best_row[0] is not None:
        best = _summary(best_row)
        best["config"] = _json(best_row[-1])
    return {
        "id": study["id"],
        "name": study["name"],
        "status": _STUDY_STATUS_NAMES[study["status"]],
        "strategy": study["strategy"],
        "mode": study["mode"],
        "objective": {
            "metric": study["metric"],
            "direction": study["direction"],
            "at": study["at"] or "last",
        },
        "rounds": {"current": study["current_round"], "total": study["total_rounds"]},
        "counts": counts,
        "total_trials": sum(counts.values()),
        "best_trial": best,
        "parent_study_id": study["parent_study_id"],
        "error": study["error"],
        "awaiting_review": bool(study["awaiting_review"]),
        "created_at": study["created_at"],
        "started_at": study["started_at"],
        "finished_at": study["finished_at"],
        "spec": _json(study["spec"]),
    }


def list_studies(
    *,
    db: Database,
    status: StudyStatus | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of studies' status documents, newest first, and how many match in all."""
    where = []
    if status is not None:
        where.append(_S.c.status == status)
    if name:
        where.append(_S.c.name.contains(name, autoescape=True))
    with db.engine.connect() as conn:  # one snapshot on SQLite, as in list_trials
        total = conn.execute(select(func.count()).select_from(_S).where(*where)).scalar_one()
        page = _STUDY_ROWS.where(*where).order_by(_S.c.id.desc()).limit(limit).offset(offset)
        rows = conn.execute(page).all() if offset < total else []
    return [_study_status(r) for r in rows], total


def _trial_filters(by_status: bool, by_round: bool) -> list[Any]:
    where = [_T.c.study_id == bindparam("study_id")]
    if by_status:
        where.append(_T.c.status == bindparam("status"))
    if by_round:
        where.append(_T.c.round_index == bindparam("round_index"))
    return where


@functools.cache
def _page_head(by_status: bool, by_round: bool) -> Select[Any]:
    """The study's direction (no row: no such study) and how many trials match."""
    total = select(func.count()).select_from(_T).where(*_trial_filters(by_status, by_round))
    return select(_S.c.direction, total.scalar_subquery()).where(_S.c.id == bindparam("study_id"))


@functools.cache
def _valued(by_status: bool, by_round: bool) -> Select[Any]:
    """How many of the matching trials have a value."""
    where = _trial_filters(by_status, by_round)
    return select(func.count()).select_from(_T).where(*where, _T.c.value.is_not(None))


@functools.cache
def _page(by_status: bool, by_round: bool, order: str) -> Select[Any]:
    """A page of trial summaries in `order`: "number"; "maximize" or "minimize", the
    trials with a value, best first (ties by number); "unvalued", those without, by number.

    Best first is read as two pages, valued then unvalued, rather than one ordered by
    `value IS NULL, value, number`: that expression no index holds, so each page sorted
    every trial of the study (2.6 ms at 10,000 trials, 8 ms deep in the list), while
    `value` alone walks ix_trials_study_value and stops at the page's end.
    """
    page = select(*_summary_columns(_T)).where(*_trial_filters(by_status, by_round))
    if order == "number":
        page = page.order_by(_T.c.number)
    elif order == "unvalued":
        page = page.where(_T.c.value.is_(None)).order_by(_T.c.number)
    else:
        best_first = _T.c.value.desc() if order == "maximize" else _T.c.value.asc()
        page = page.where(_T.c.value.is_not(None)).order_by(best_first, _T.c.number)
    return page.limit(bindparam("limit")).offset(bindparam("offset"))


def list_trials(
    *,
    db: Database,
    study_id: int,
    status: TrialStatus | None = None,
    round_index: int | None = None,
    sort: str = "number",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """A page of a study's trials (summaries, no config) and how many match in all.

    `sort`: "number" (creation order) or "value" (best objective first, then unfinished).
    """
    params: dict[str, Any] = {"study_id": study_id, "limit": limit, "offset": offset}
    if status is not None:
        params["status"] = TrialStatus(status)
    if round_index is not None:
        params["round_index"] = round_index
    by_status, by_round = status is not None, round_index is not None
    with db.engine.connect() as conn:
        # One transaction: on SQLite one snapshot from the first SELECT, so the total and
        # the page agree (on PostgreSQL, read committed, each statement has its own).
        found = conn.execute(_page_head(by_status, by_round), params).first()
        if found is None:
            raise NotFound(f"study {study_id} does not exist")
        direction, total = found
        rows: list[Any] = []
        if offset < total:
            order = "number" if sort == "number" else direction
            rows += conn.execute(_page(by_status, by_round, order), params).all()
        if sort != "number" and len(rows) < limit and offset + len(rows) < total:
            # The valued trials ran out on this page: the unvalued follow, by number.
            if rows:
                valued = offset + len(rows)
            else:
                valued = conn.execute(_valued(by_status, by_round), params).scalar_one()
            rest = {**params, "limit": limit - len(rows), "offset": max(0, offset - valued)}
            rows += conn.execute(_page(by_status, by_round, "unvalued"), rest).all()
    return [_summary(r) for r in rows], total


def get_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    with db.session(write=False) as s:
        trial = s.get(Trial, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return {**trial_dict(trial), "config": trial.config}


def trial_metrics(*, db: Database, trial_id: int) -> list[dict[str, Any]]:
    """The learning curve of the trial's latest attempt, epoch by epoch."""
    with db.session(write=False) as s:
        trial = s.get(Trial, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist")
        rows = s.scalars(
            select(Metric)
            .where(Metric.trial_id == trial_id, Metric.attempt == trial.attempt)
            .order_by(Metric.epoch)
        ).all()
        return [{"epoch": m.epoch, **{k: getattr(m, k) for k in METRIC_FIELDS}} for m in rows]


def stop_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """Stop a trial: at once if it waits, at the end of its current epoch if it runs."""
    with db.session() as s:
        trial = s.get(Trial, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist")
        if trial.status in TERMINAL_TRIAL:
            raise Conflict(f"trial {trial_id} has already ended ({trial.status.value})")
        if trial.status == TrialStatus.running:
            trial.stop_requested = True
            trial.stop_reason = "stop"  # overrides a pause or a prune asked before
            emit(s, study_id=trial.study_id, type="trial.stop_requested", trial_id=trial.id)
        else:
            emit(
                s,
                study_id=trial.study_id,
                type="trial.finished",
                trial_id=trial.id,
                number=trial.number,
                status="stopped",
                outcome="stopped",
                value=None,
            )
            trial.status = TrialStatus.stopped
            trial.outcome = "stopped"
            trial.finished_at = func.now()
            s.flush()
            after_trial_finished(s, study_id=trial.study_id)
        s.flush()
        s.refresh(trial)
        return {**trial_dict(trial), "config": trial.config}


def cancel_study(*, db: Database, study_id: int) -> dict[str, Any]:
    """Cancel: queued and paused trials are stopped now, running ones at their next epoch."""
    with db.session() as s:
        study = _study(s, study_id)
        if study.status in TERMINAL_STUDY:
            raise Conflict(f"study {study_id} has already ended ({study.status.value})")
        s.execute(
            update(Trial)
            .where(
                Trial.study_id == study_id,
                Trial.status.in_([TrialStatus.queued, TrialStatus.paused]),
            )
            .values(
                status=TrialStatus.stopped,
                outcome="cancelled",
                error="the study was cancelled",
                finished_at=func.now(),
            )
        )
        s.execute(
            update(Trial)
            .where(Trial.study_id == study_id, Trial.status == TrialStatus.running)
            .values(stop_requested=True, stop_reason="cancel")
        )
        study.status = StudyStatus.cancelled
        study.finished_at = func.now()
        emit(s, study_id=study_id, type="study.cancelled")
        emit(s, study_id=study_id, type="study.finished", status="cancelled", error=None)
        s.flush()
        s.refresh(study)
        return study_dict(s, study)


def retry_failed(*, db: Database, study_id: int) -> dict[str, Any]:
    """Queue failed and stopped trials again as new attempts; the study runs again."""
    with db.session() as s:
        study = _study(s, study_id)
        moved = s.execute(
            update(Trial)
            .where(
                Trial.study_id == study_id,
                Trial.status.in_([TrialStatus.failed, TrialStatus.stopped]),
            )
            .values(
                status=TrialStatus.queued,
                retries=0,
                error=None,
                outcome=None,
                value=None,
                stop_requested=False,
                finished_at=None,
            )
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            emit(s, study_id=study_id, type="study.requeued", trials=moved.rowcount)  # type: ignore[attr-defined]
            study.status = StudyStatus.running if study.started_at else StudyStatus.queued
            study.finished_at = None
            study.error = None
        s.flush()
        s.refresh(study)
        return {**study_dict(s, study), "requeued": moved.rowcount}  # type: ignore[attr-defined]


def list_rounds(*, db: Database, study_id: int) -> list[dict[str, Any]]:
    with db.session(write=False) as s:
        _study(s, study_id)
        rounds = s.scalars(
            select(Round).where(Round.study_id == study_id).order_by(Round.index)
        ).all()
        return [{"index": r.index, "box": r.box, "created_at": r.created_at} for r in rounds]


EXPORT_COLUMNS = (
    "trial_id",
    "number",
    "round",
    "status",
    "value",
    "outcome",
    "attempt",
    "retries",
    "epochs_done",
    "worker_id",
    "created_at",
    "started_at",
    "finished_at",
    "error",
)


def export_trials(*, db: Database, study_id: int) -> dict[str, Any]:
    """Every trial as one flat row: fixed columns, `param.<path>`, then `final.<metric>`.

    `final.*` are the metrics of the last epoch of the trial's latest attempt, so a
    stopped or failed trial shows where it got to.
    """
    with db.session(write=False) as s:
        study = _study(s, study_id)
        trials = s.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        latest = and_(Metric.trial_id == Trial.id, Metric.attempt == Trial.attempt)
        last_epoch = (
            select(Metric.trial_id, func.max(Metric.epoch).label("epoch"))
            .join(Trial, latest)
            .where(Trial.study_id == study_id)
            .group_by(Metric.trial_id)
            .subquery()
        )
        finals = {
            m.trial_id: m
            for m in s.scalars(
                select(Metric)
                .join(Trial, latest)
                .join(
                    last_epoch,
                    and_(
                        Metric.trial_id == last_epoch.c.trial_id,
                        Metric.epoch == last_epoch.c.epoch,
                    ),
                )
            )
        }
        paths = list(study.spec.get("space", {}))
        for t in trials:
            paths += [p for p in t.params if p not in paths]
        rows = []
        for t in trials:
            row: dict[str, Any] = {
                "trial_id": t.id,
                "number": t.number,
                "round": t.round_index,
                "status": t.status.value,
                "value": t.value,
                "outcome": t.outcome,
                "attempt": t.attempt,
                "retries": t.retries,
                "epochs_done": t.epochs_done,
                "worker_id": t.worker_id,
                "created_at": _iso(t.created_at),
                "started_at": _iso(t.started_at),
                "finished_at": _iso(t.finished_at),
                "error": t.error,
            }
            row.update({f"param.{p}": t.params.get(p) for p in paths})
            final = finals.get(t.id)
            row.update({f"final.{k}": getattr(final, k, None) for k in METRIC_FIELDS})
            rows.append(row)
        columns = [
            *EXPORT_COLUMNS,
            *(f"param.{p}" for p in paths),
            *(f"final.{k}" for k in METRIC_FIELDS),
        ]
        return {
            "study_id": study.id,
            "name": study.name,
            "objective": {
                "metric": study.metric,
                "direction": study.direction,
                "at": study.spec.get("objective", {}).get("at", "last"),
            },
            "columns": columns,
            "rows": rows,
        }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite's timestamps are naive UTC
        value = value.replace(tzinfo=UTC)
    return str(value.isoformat())


def export_csv(export: dict[str, Any]) -> str:
    """The export as CSV: lists as JSON, NaN and None as empty cells.

    A text cell that starts like a spreadsheet formula (= + - @) gets a leading quote,
    so opening an export cannot run a formula a spec or an error message carried.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(export["columns"])
    for row in export["rows"]:
        writer.writerow([_cell(row.get(c)) for c in export["columns"]])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def list_workers(*, db: Database, lease_seconds: float) -> list[dict[str, Any]]:
    """Workers seen in the last hour, most recent heartbeat first, with what each runs."""
    with db.session(write=False) as s:
        now = s.scalar(select(db_epoch())) or 0.0
        workers = s.scalars(
            select(Worker)
            .where(Worker.last_heartbeat > now - 3600)
            .order_by(Worker.last_heartbeat.desc())
            .limit(500)
        ).all()
        running: dict[str, list[int]] = {}
        for trial_id, worker_id in s.execute(
            select(Trial.id, Trial.worker_id).where(Trial.status == TrialStatus.running)
        ):
            if worker_id is not None:
                running.setdefault(worker_id, []).append(trial_id)
        return [
            {
                "id": w.id,
                "name": w.name,
                "host": w.host,
                "pid": w.pid,
                "alive": now - w.last_heartbeat < lease_seconds,
                "seconds_since_heartbeat": round(now - w.last_heartbeat, 3),
                "trials_done": w.trials_done,
                "running": running.get(w.id, []),
            }
            for w in workers
        ]


def zoom_study(
    *,
    db: Database,
    study_id: int,
    settings: Settings,
    rounds: int | None = None,
    trials_per_round: int | None = None,
    keep_top: float | None = None,
) -> int:
    """Start a coarse-to-fine study whose first box surrounds study_id's best trials."""
    with db.session(write=False) as s:
        parent = _study(s, study_id)
        rows = s.execute(
            select(Trial.params, Trial.value, Trial.status).where(Trial.study_id == study_id)
        ).all()
        spec = dict(parent.spec)
    history = [(r.params, r.value if r.status == TrialStatus.completed else None) for r in rows]
    if not any(value is not None for _, value in history):
        raise Conflict(f"study {study_id} has no finished trial to zoom into yet")
    old = spec.get("strategy", {})
    strategy: dict[str, Any] = {
        "type": "coarse_to_fine",
        "rounds": rounds or (old.get("rounds") if old.get("type") == "coarse_to_fine" else 2),
        "trials_per_round": trials_per_round
        or old.get("trials_per_round")
        or max(4, min(50, old.get("trials", 20) // 2)),
    }
    if keep_top is not None:
        strategy["keep_top"] = keep_top
    if old.get("type") == "coarse_to_fine" and "placement" in old:
        strategy["placement"] = old["placement"]  # how the parent placed its trials
    child = {**spec, "name": f"{parent.name} (zoom)"[:200], "strategy": strategy}
    return create_study(
        db=db, data=child, settings=settings, parent_study_id=study_id, history=history
    )
