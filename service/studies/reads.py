"""The study and trial documents the API returns, built in one place, and the plain reads."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import get_or_404
from service.models import (
    METRIC_FIELDS,
    TERMINAL_TRIAL,
    Metric,
    Round,
    Study,
    Trial,
    TrialStatus,
)
from service.spec import StudySpec, stored_spec, total_trials

# A trial's summary, field by field: the columns it is read from, in the document's order.
# Every summary (from an entity here, from raw rows in hot_reads, in the export) takes its
# fields from this list. `config` is not in it: a JSON document per trial that only the
# trial's own page needs (decoding it dominated the cost of a trials page).
TRIAL_COLUMNS = (
    "id",
    "study_id",
    "number",
    "round_index",
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
# The document calls round_index "round"; every other key is its column's name.
TRIAL_KEYS = tuple("round" if c == "round_index" else c for c in TRIAL_COLUMNS)
_TRIAL_FIELDS = tuple(zip(TRIAL_KEYS, TRIAL_COLUMNS, strict=True))

# A study's status document reads these of the study (plus `at`, the objective's epoch).
STUDY_COLUMNS = (
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
    "spec_sha256",
)

TRIAL_STATUS_NAMES = {s.name: s.value for s in TrialStatus}


def trial_dict(t: Trial) -> dict[str, Any]:
    """A trial's summary from its entity."""
    summary = {key: getattr(t, column) for key, column in _TRIAL_FIELDS}
    summary["status"] = t.status.value
    return summary


def trial_detail(t: Trial) -> dict[str, Any]:
    """A trial's summary and its config: what a trial's own page and its writes return."""
    return {**trial_dict(t), "config": t.config}


def summary_of_row(row: Sequence[Any]) -> dict[str, Any]:
    """`trial_dict` of a raw row that starts with the summary columns (see hot_reads):
    statuses come as their stored names, params as their stored JSON text."""
    summary = dict(zip(TRIAL_KEYS, row, strict=False))
    summary["status"] = TRIAL_STATUS_NAMES[summary["status"]]
    summary["params"] = json_of_text(summary["params"])
    return summary


def json_of_text(text: str | None) -> Any:
    """A JSON column's value from its stored text, as SQLAlchemy's JSON type would read it."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity (json.dumps writes them), or beyond orjson
        return json.loads(text)


def planned_trials(spec: StudySpec, existing: int) -> int:
    """How many trials a study runs in all: its plan over every round, or the trials that
    exist when there are more (retries and forks add some)."""
    return max(total_trials(spec), existing)


def study_document(
    study: Mapping[str, Any],
    *,
    counts: dict[str, int],
    best: dict[str, Any] | None,
    never_ran: int = 0,
) -> dict[str, Any]:
    """A study's status (StudyRead) from its STUDY_COLUMNS, its trial counts and best trial.

    `study["status"]` is the status's value; `best` is the best trial's detail or None;
    `never_ran` counts the trials stopped before they started (a cancel stops the queued
    ones): they are not done, so a cancelled study's progress is not full.
    """
    spec = stored_spec(study["spec"], fingerprint=study["spec_sha256"])
    return {
        "id": study["id"],
        "name": study["name"],
        "status": study["status"],
        "strategy": study["strategy"],
        "mode": study["mode"],
        "objective": {
            "metric": study["metric"],
            "direction": study["direction"],
            "at": spec.objective.at,
        },
        "rounds": {"current": study["current_round"], "total": study["total_rounds"]},
        "counts": counts,
        "total_trials": sum(counts.values()),
        "planned_trials": planned_trials(spec, sum(counts.values())),
        "finished_trials": sum(counts.get(k.value, 0) for k in TERMINAL_TRIAL) - never_ran,
        "best_trial": best,
        "parent_study_id": study["parent_study_id"],
        "error": study["error"],
        "awaiting_review": bool(study["awaiting_review"]),
        "created_at": study["created_at"],
        "started_at": study["started_at"],
        "finished_at": study["finished_at"],
        "spec": study["spec"],
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


def trial_counts(s: Session, study_id: int) -> dict[str, int]:
    """How many of the study's trials are in each status (every status, zeros included)."""
    counts = dict.fromkeys((st.value for st in TrialStatus), 0)
    for status, n in s.execute(
        select(Trial.status, func.count()).where(Trial.study_id == study_id).group_by(Trial.status)
    ):
        counts[TrialStatus(status).value] = n
    return counts


def never_ran(s: Session, study_id: int) -> int:
    """How many of the study's trials were stopped before any worker started them."""
    return int(
        s.scalar(
            select(func.count()).where(
                Trial.study_id == study_id,
                Trial.status == TrialStatus.stopped,
                Trial.started_at.is_(None),
            )
        )
        or 0
    )


def study_dict(s: Session, study: Study, *, with_best: bool = True) -> dict[str, Any]:
    """A study's status from its entity, inside a unit of work that changed it.

    The same document as `get_study`, which reads it faster (see hot_reads).
    """
    best = best_trial(s, study) if with_best else None
    fields = {column: getattr(study, column) for column in STUDY_COLUMNS}
    fields["status"] = study.status.value
    return study_document(
        fields,
        counts=trial_counts(s, study.id),
        best=trial_detail(best) if best is not None else None,
        never_ran=never_ran(s, study.id),
    )


def get_trial(*, db: Database, trial_id: int) -> dict[str, Any]:
    """A trial's own document: its detail and, with execution.gradient_check, its check
    (only here: a study's best trial is read from raw rows, without it)."""
    with db.session(write=False) as s:
        trial = get_or_404(s, Trial, trial_id)
        return {**trial_detail(trial), "gradient_check": trial.gradient_check}


def trial_metrics(
    *, db: Database, trial_id: int, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """The learning curve of the trial's latest attempt, epoch by epoch: `limit` epochs
    (all if None) after the first `offset`."""
    with db.session(write=False) as s:
        trial = get_or_404(s, Trial, trial_id)
        rows = s.scalars(
            select(Metric)
            .where(Metric.trial_id == trial_id, Metric.attempt == trial.attempt)
            .order_by(Metric.epoch)
            .limit(limit)
            .offset(offset)
        ).all()
        return [
            {"epoch": m.epoch, **{k: getattr(m, k) for k in METRIC_FIELDS}, "extra": m.extra or {}}
            for m in rows
        ]


def round_dict(r: Round) -> dict[str, Any]:
    return {"index": r.index, "box": r.box, "created_at": r.created_at}


def study_rounds(s: Session, study_id: int) -> list[dict[str, Any]]:
    """The study's rounds in order, each with the box it sampled."""
    rounds = s.scalars(select(Round).where(Round.study_id == study_id).order_by(Round.index))
    return [round_dict(r) for r in rounds]


def list_rounds(*, db: Database, study_id: int) -> list[dict[str, Any]]:
    with db.session(write=False) as s:
        get_or_404(s, Study, study_id)
        return study_rounds(s, study_id)
