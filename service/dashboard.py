"""The dashboard's reads: aggregates computed in SQL and downsampled, never a row per trial.

A study of 50,000 trials must open in a browser in well under two seconds, so nothing
here returns a row per trial or per epoch: counts come from GROUP BY, the best-so-far
line from a window function (only the trials that improved it), the scatter and
parallel-coordinates sample from a stride over trial numbers capped at `MAX_POINTS`
(with the best trials always in it), and learning curves from a stride over epochs.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from service.db import Database
from service.errors import Unavailable, get_or_404, not_found
from service.events import LAST_EVENT_ID, take_order_lock
from service.models import METRIC_FIELDS, Event, Metric, Study, Trial, TrialStatus
from service.spec import stored_spec
from service.studies.reads import study_dict, study_rounds, trial_dict
from service.studies.workers import waiting_for

MAX_POINTS = 2000  # scatter and parallel-coordinates points per study, best trials included
TOP_ALWAYS = 100  # the best trials are always in the sample, whatever the stride skips
CURVE_POINTS = 300  # epochs per learning curve at most
SORTABLE = ("number", "value", "status", "round", "epochs_done", "started_at", "finished_at")
SORT_PATTERN = rf"^-?({'|'.join(SORTABLE)}|params\..+)$"


class UnknownSort(ValueError):
    """A sort by a hyperparameter the study's space does not have."""


def _valued(study_id: int) -> list[ColumnElement[bool]]:
    return [
        Trial.study_id == study_id,
        Trial.status == TrialStatus.completed,
        Trial.value.is_not(None),
    ]


def _best_first(study: Study) -> list[Any]:
    value = Trial.value.desc() if study.direction == "maximize" else Trial.value.asc()
    return [value, Trial.number]


def records(s: Session, study: Study) -> list[tuple[int, float]]:
    """The best-so-far line: the trials, in number order, that improved on all before them."""
    agg = func.max if study.direction == "maximize" else func.min
    running = agg(Trial.value).over(order_by=Trial.number, rows=(None, 0))
    sub = (
        select(Trial.number, Trial.value, running.label("best"))
        .where(*_valued(study.id))
        .subquery()
    )
    rows = s.execute(
        select(sub.c.number, sub.c.value).where(sub.c.value == sub.c.best).order_by(sub.c.number)
    ).all()
    out: list[tuple[int, float]] = []
    for number, value in rows:
        if not out or value != out[-1][1]:  # ties with the record do not improve it
            out.append((number, value))
    return out


def settled_cursor(db: Database, study_id: int, *, attempts: int = 10) -> int:
    """An event id up to which every event of the study is committed: where a page that
    reads the study's state next follows the event stream from.

    On SQLite the study's last event is that (one writer at a time commits ids in order).
    On PostgreSQL ids come from a sequence and commit out of order, so the largest id seen
    may have a smaller one still in flight: take the study's order lock the way the event
    stream does (service.events), which waits out every transaction holding an id, and
    use the sequence's last value, then let the lock go at once.
    """
    for _ in range(attempts):
        with db.session(write=False) as s:
            if db.dialect != "postgresql":
                return s.scalar(select(func.max(Event.id)).where(Event.study_id == study_id)) or 0
            if take_order_lock(s, study_id):
                return int(s.scalar(select(LAST_EVENT_ID)) or 0)
    raise Unavailable(
        f"study {study_id}'s events are being written without pause; try again",
        headers={"Retry-After": "1"},
    )


def study_overview(*, db: Database, study_id: int, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Everything the study page draws: counts, records, a sample, and the event cursor."""
    # The cursor first: an event that lands while the rest is read is replayed, not missed.
    cursor = settled_cursor(db, study_id)
    with db.session(write=False) as s:
        return overview(s, study_id, max_points=max_points, last_event=cursor)


def overview(
    s: Session, study_id: int, *, max_points: int = MAX_POINTS, last_event: int | None = None
) -> dict[str, Any]:
    """The study page's data; `last_event` from `settled_cursor`, read before `s` began."""
    study = get_or_404(s, Study, study_id)
    if last_event is None:  # one session: correct on SQLite, where ids commit in order
        last_event = s.scalar(select(func.max(Event.id)).where(Event.study_id == study_id)) or 0
    summary = study_dict(s, study)
    summary["waiting_for"] = waiting_for(s, summary)
    counts = summary["counts"]
    best, stride, sample = _sample(s, study, max_points=max_points)
    return {
        "study": summary,
        "planned_trials": summary["planned_trials"],
        "finished_trials": summary["finished_trials"],
        # Completed trials are the ones with a value (a diverged one is failed), and this
        # count comes from the status index: counting `value IS NOT NULL` reads every row.
        "valued_trials": counts[TrialStatus.completed.value],
        "records": records(s, study),
        "sample": sample,
        "sample_stride": stride,
        "best_ids": [row.id for row in best],
        "rounds": study_rounds(s, study_id),
        "last_event_id": last_event,
    }


def _sample(s: Session, study: Study, *, max_points: int) -> tuple[list[Any], int, dict[str, Any]]:
    """The best completed trials, the stride, and the sample: the best and every k-th."""
    top_n = min(TOP_ALWAYS, max_points // 2)
    columns = (Trial.id, Trial.number, Trial.round_index, Trial.params, Trial.value)
    best = s.execute(
        select(*columns).where(*_valued(study.id)).order_by(*_best_first(study)).limit(top_n)
    ).all()
    span = (s.scalar(select(func.max(Trial.number)).where(Trial.study_id == study.id)) or 0) + 1
    # A stride over trial numbers: trials are drawn independently, so every k-th one is
    # an unbiased sample, and coarse-to-fine rounds keep their share of it.
    stride = max(1, math.ceil(span / max(1, max_points - top_n)))
    # By number through the (study_id, number) index: a filter on `number % stride`
    # would read all 50,000 rows to keep 2,000.
    strided = s.execute(
        select(*columns)
        .where(*_valued(study.id), Trial.number.in_(range(0, span, stride)))
        .order_by(Trial.number)
    ).all()
    chosen = sorted({row.id: row for row in [*best, *strided]}.values(), key=lambda r: r.number)
    paths = list(stored_spec(study.spec, fingerprint=study.spec_sha256).space)
    sample = {
        "ids": [r.id for r in chosen],
        "numbers": [r.number for r in chosen],
        "rounds": [r.round_index for r in chosen],
        "values": [r.value for r in chosen],
        "params": {path: [r.params.get(path) for r in chosen] for path in paths},
    }
    return list(best), stride, sample


def curve(s: Session, trial: Trial, *, points: int) -> dict[str, Any]:
    """The trial's latest attempt, every `stride`-th epoch and the last one."""
    last, n = s.execute(
        select(func.max(Metric.epoch), func.count()).where(
            Metric.trial_id == trial.id, Metric.attempt == trial.attempt
        )
    ).one()
    stride = max(1, math.ceil((n or 0) / points))
    rows = s.execute(
        select(Metric.epoch, *(getattr(Metric, k) for k in METRIC_FIELDS), Metric.extra)
        .where(
            Metric.trial_id == trial.id,
            Metric.attempt == trial.attempt,
            or_(Metric.epoch % stride == 0, Metric.epoch == last),
        )
        .order_by(Metric.epoch)
    ).all()
    metrics = {k: [r[i + 1] for r in rows] for i, k in enumerate(METRIC_FIELDS)}
    return {
        "trial": trial_dict(trial),
        "stride": stride,
        "epochs": [r[0] for r in rows],
        "metrics": {**metrics, **named_columns([r[-1] for r in rows])},
    }


def named_columns(extras: list[dict[str, Any] | None]) -> dict[str, list[Any]]:
    """The named metrics of some epochs (each row's JSON) as a column per name, null
    where an epoch did not report it: a task's own function's curves."""
    names = sorted({name for extra in extras if extra for name in extra})
    return {name: [(extra or {}).get(name) for extra in extras] for name in names}


def best_curves(*, db: Database, study_id: int, top: int, points: int) -> list[dict[str, Any]]:
    """Learning curves of the study's best `top` trials, each at most `points` epochs."""
    with db.session(write=False) as s:
        study = get_or_404(s, Study, study_id)
        trials = s.scalars(
            select(Trial).where(*_valued(study_id)).order_by(*_best_first(study)).limit(top)
        ).all()
        return [curve(s, t, points=points) for t in trials]


def _sort_key(study: Study, sort: str) -> list[Any]:
    desc = sort.startswith("-")
    name = sort.lstrip("-")
    if name.startswith("params."):
        path = name.removeprefix("params.")
        dist = stored_spec(study.spec, fingerprint=study.spec_sha256).space.get(path)
        if dist is None:
            raise UnknownSort(f"the study has no hyperparameter {path!r}")
        element = Trial.params[path]
        column: Any = element.as_float() if dist.type in ("float", "int") else element.as_string()
    elif name == "value":
        # "value" alone means best first, whichever the direction; "-value" worst first.
        maximize = study.direction == "maximize"
        column = Trial.value
        desc = maximize != desc
    elif name == "round":
        column = Trial.round_index
    else:
        column = getattr(Trial, name)
    order = column.desc() if desc else column.asc()
    return [column.is_(None), order, Trial.number]


def trials_table(
    *,
    db: Database,
    study_id: int,
    status: TrialStatus | None,
    round_index: int | None,
    sort: str,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """One page of the trials table sorted by `sort` (SORT_PATTERN), and the total.

    UnknownSort if `sort` names a hyperparameter the study does not have.
    """
    q = select(Trial).where(Trial.study_id == study_id)
    if status is not None:
        q = q.where(Trial.status == status)
    if round_index is not None:
        q = q.where(Trial.round_index == round_index)
    with db.session(write=False) as s:
        study = get_or_404(s, Study, study_id)
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = s.scalars(q.order_by(*_sort_key(study, sort)).limit(limit).offset(offset)).all()
        items = [trial_dict(t) for t in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset, "sort": sort}


def trial_cursor(*, db: Database, trial_id: int) -> dict[str, Any]:
    """The trial's study and where that study's event stream is now."""
    with db.session(write=False) as s:
        study_id = s.scalar(select(Trial.study_id).where(Trial.id == trial_id))
    if study_id is None:
        raise not_found(Trial, trial_id)
    return {"study_id": study_id, "last_event_id": settled_cursor(db, study_id)}


def metrics_tail(*, db: Database, trial_id: int, after: int) -> dict[str, Any]:
    """The epochs of the trial's latest attempt after `after`, and which attempt that is."""
    with db.session(write=False) as s:
        trial = get_or_404(s, Trial, trial_id)
        rows = s.execute(
            select(Metric.epoch, *(getattr(Metric, k) for k in METRIC_FIELDS), Metric.extra)
            .where(
                Metric.trial_id == trial_id,
                Metric.attempt == trial.attempt,
                Metric.epoch > after,
            )
            .order_by(Metric.epoch)
        ).all()
        return {
            "attempt": trial.attempt,
            "rows": [
                {
                    "epoch": r[0],
                    **{k: r[i + 1] for i, k in enumerate(METRIC_FIELDS)},
                    "extra": r[-1] or {},
                }
                for r in rows
            ],
        }
