"""A study's trials as one flat table, for a JSON or a CSV download."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import get_or_404
from service.models import METRIC_FIELDS, Metric, Study, Trial
from service.schemas import utc_iso
from service.spec import stored_spec
from service.studies.reads import trial_dict

# The export's fixed columns, in its order: fields of the trial summary, its id renamed.
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
_TIMES = ("created_at", "started_at", "finished_at")


def export_trials(*, db: Database, study_id: int) -> dict[str, Any]:
    """Every trial as one flat row: fixed columns, `param.<path>`, then `final.<metric>`.

    `final.*` are the metrics of the last epoch of the trial's latest attempt, so a
    stopped or failed trial shows where it got to. A study of a task's own function has
    a column per metric its function reported (the objective's first), and of the
    trainer's names only those it reported.
    """
    with db.session(write=False) as s:
        study = get_or_404(s, Study, study_id)
        trials = s.scalars(
            select(Trial).where(Trial.study_id == study_id).order_by(Trial.number)
        ).all()
        finals = _final_metrics(s, study_id)
        spec = stored_spec(study.spec, fingerprint=study.spec_sha256)
        paths = list(spec.space)
        for t in trials:
            paths += [p for p in t.params if p not in paths]
        metrics = _final_names(study, finals.values())
        columns = [
            *EXPORT_COLUMNS,
            *(f"param.{p}" for p in paths),
            *(f"final.{k}" for k in metrics),
        ]
        return {
            "study_id": study.id,
            "name": study.name,
            "objective": {
                "metric": study.metric,
                "direction": study.direction,
                "at": spec.objective.at,
            },
            "columns": columns,
            "rows": [_export_row(t, paths, metrics, finals.get(t.id)) for t in trials],
        }


def _final_metrics(s: Session, study_id: int) -> dict[int, Metric]:
    """Each trial's last epoch of its latest attempt, by trial id."""
    latest = and_(Metric.trial_id == Trial.id, Metric.attempt == Trial.attempt)
    last_epoch = (
        select(Metric.trial_id, func.max(Metric.epoch).label("epoch"))
        .join(Trial, latest)
        .where(Trial.study_id == study_id)
        .group_by(Metric.trial_id)
        .subquery()
    )
    return {
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


def _final_names(study: Study, finals: Iterable[Metric]) -> list[str]:
    """The final metrics a study's export has a column for: the trainer's, or a task's."""
    if study.entrypoint is None:
        return list(METRIC_FIELDS)
    finals = list(finals)
    named = sorted({name for m in finals for name in (m.extra or {})} - {study.metric})
    trainer = [
        k
        for k in METRIC_FIELDS
        if k != study.metric and any(getattr(m, k) is not None for m in finals)
    ]
    return [study.metric, *named, *trainer]


def _final(final: Metric | None, name: str) -> Any:
    if final is None:
        return None
    if name in METRIC_FIELDS:
        return getattr(final, name)
    return (final.extra or {}).get(name)


def _export_row(
    t: Trial, paths: Sequence[str], metrics: Sequence[str], final: Metric | None
) -> dict[str, Any]:
    summary = trial_dict(t)
    summary["trial_id"] = summary["id"]
    for name in _TIMES:
        summary[name] = _iso(summary[name])
    row: dict[str, Any] = {name: summary[name] for name in EXPORT_COLUMNS}
    row.update({f"param.{p}": t.params.get(p) for p in paths})
    row.update({f"final.{k}": _final(final, k) for k in metrics})
    return row


def _iso(value: Any) -> str | None:
    return None if value is None else utc_iso(value)


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
