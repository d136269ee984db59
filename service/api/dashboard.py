"""Routes the dashboard needs beyond the public API: aggregates computed in SQL, downsampled.

A study of 50,000 trials must open in a browser in well under two seconds, so nothing
here returns a row per trial or per epoch: counts come from GROUP BY, the best-so-far
line from a window function (only the trials that improved it), the scatter and
parallel-coordinates sample from a stride over trial numbers capped at `MAX_POINTS`
(with the best trials always in it), and learning curves from a stride over epochs.
It also serves plotly.js from the plotly Python package, so the dashboard works offline.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from service.api.deps import DbDep, ReadScope
from service.auth import COOKIE, credentials, login_page, safe_next, same_origin
from service.db import Database
from service.errors import NotFound, Unauthorized, Unavailable
from service.events import LAST_EVENT_ID, take_order_lock
from service.models import METRIC_FIELDS, Event, Metric, Round, Study, Trial, TrialStatus
from service.schemas import MetricRead, RoundRead, StudyRead, TrialRead
from service.spec import StudySpec, total_trials
from service.studies import study_dict, trial_dict

# One router for both: app.py includes it with one line, before the /static mount.
router = APIRouter(tags=["dashboard"])

MAX_POINTS = 2000  # scatter and parallel-coordinates points per study, best trials included
TOP_ALWAYS = 100  # the best trials are always in the sample, whatever the stride skips
CURVE_POINTS = 300  # epochs per learning curve at most
STUDY = "/api/dashboard/studies/{study_id}"


# --- plotly.js from the plotly package -------------------------------------------------


@cache
def plotly_js() -> Path:
    """The plotly.min.js the plotly wheel ships (4 MB: served from there, never copied)."""
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


@cache
def _plotly_bodies() -> tuple[bytes, bytes, str]:
    """The script as is and gzipped, and its ETag: read and compressed once per process.

    Sent from memory in one write: streamed from disk in 64 kB chunks, each a hop through
    the thread pool, the 4.8 MB took up to 0.4 s on a busy machine. Gzip level 1 makes
    1.7 MB of it in 0.1 s, once per process.
    """
    raw = plotly_js().read_bytes()
    return (
        raw,
        gzip.compress(raw, compresslevel=1, mtime=0),
        f'"{hashlib.sha256(raw).hexdigest()[:32]}"',
    )


@router.get("/static/vendor/plotly.min.js", include_in_schema=False)
def get_plotly_js(request: Request) -> Response:
    raw, packed, etag = _plotly_bodies()
    # The file changes only with the installed plotly: the browser keeps it a day.
    headers = {"Cache-Control": "public, max-age=86400", "ETag": etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="text/javascript", headers=headers)
    return Response(raw, media_type="text/javascript", headers=headers)


# --- signing in --------------------------------------------------------------------------
# With tokens configured every page and file needs one (service.auth); a browser cannot
# send a bearer header on navigation, so the dashboard signs in once with a form and the
# token rides in an HttpOnly, SameSite=Strict cookie from then on.


@router.get("/login", include_in_schema=False)
def get_login(request: Request, next: str = "/") -> Response:
    if not request.app.state.auth.tokens:  # nothing to sign in to
        return RedirectResponse(safe_next(next), status_code=303)
    return login_page(next_path=safe_next(next), status=200)


@router.post("/login", include_in_schema=False)
async def post_login(request: Request) -> Response:
    """Check the form's token; if valid, keep it in the cookie and go where the user was."""
    if not request.app.state.auth.tokens:
        return RedirectResponse("/", status_code=303)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
    token = (form.get("token") or [""])[0].strip()
    target = safe_next((form.get("next") or ["/"])[0])
    if not same_origin(request.headers, request.url.scheme):
        return login_page(next_path=target, error="Sign in from this service's own page.")
    try:
        request.app.state.auth.authenticate(f"Bearer {token}")
    except Unauthorized:
        return login_page(next_path=target, error="That token is not valid.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", include_in_schema=False)
def post_logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


class SignedIn(BaseModel):
    tokens_required: bool = Field(description="whether this service asks for API tokens")
    name: str | None = Field(description="the signed-in token's name")
    scopes: list[str] = Field(description="what the token may do (write implies read)")


@router.get("/api/dashboard/session", response_model=SignedIn)
def get_session(request: Request) -> dict[str, Any]:
    """Who the dashboard is signed in as, and what it may do (any valid token may ask)."""
    auth = request.app.state.auth
    if not auth.tokens:
        return {"tokens_required": False, "name": None, "scopes": ["read", "write"]}
    token = auth.authenticate(credentials(request.headers, request.cookies)[0])
    return {"tokens_required": True, "name": token.name, "scopes": sorted(token.granted)}


# --- schemas ---------------------------------------------------------------------------


class Sample(BaseModel):
    """Sampled trials column by column: half the bytes of one object per trial."""

    ids: list[int]
    numbers: list[int]
    rounds: list[int]
    values: list[float | None]
    params: dict[str, list[Any]] = Field(description="per space path, the trials' values")


class StudyOverview(BaseModel):
    study: StudyRead
    planned_trials: int = Field(description="trials the whole study will have run")
    finished_trials: int = Field(description="trials in a terminal status")
    valued_trials: int = Field(description="completed trials with an objective value")
    records: list[tuple[int, float]] = Field(
        description="(number, value) of each completed trial that improved the best so far"
    )
    sample: Sample = Field(
        description=f"at most {MAX_POINTS} completed trials: a stride over numbers plus the best"
    )
    sample_stride: int = Field(description="every k-th trial number is in the sample")
    best_ids: list[int] = Field(description="ids of the best trials, best first")
    rounds: list[RoundRead]
    last_event_id: int = Field(
        description="the study's latest event when this was read: follow the stream after it"
    )


class Curve(BaseModel):
    trial: TrialRead
    stride: int = Field(description="every k-th epoch is kept, and the last")
    epochs: list[int]
    metrics: dict[str, list[float | None]]


class DashboardTrialsPage(BaseModel):
    items: list[TrialRead]
    total: int
    limit: int
    offset: int
    sort: str


# --- queries ---------------------------------------------------------------------------


def _study(s: Session, study_id: int) -> Study:
    study = s.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} does not exist")
    return study


def _valued(study_id: int) -> list[ColumnElement[bool]]:
    return [
        Trial.study_id == study_id,
        Trial.status == TrialStatus.completed,
        Trial.value.is_not(None),
    ]


def _best_first(study: Study) -> list[Any]:
    value = Trial.value.desc() if study.direction == "maximize" else Trial.value.asc()
    return [value, Trial.number]


def _planned(study: Study, queued_so_far: int) -> int:
    # Read through the schema only, not parse_spec's caps and checks: a spec stored under
    # other caps stays readable. One the schema no longer reads counts what exists.
    try:
        planned = total_trials(StudySpec.model_validate(study.spec))
    except ValidationError:
        planned = 0
    return max(planned, queued_so_far)


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


def overview(
    s: Session, study_id: int, *, max_points: int = MAX_POINTS, last_event: int | None = None
) -> dict[str, Any]:
    """The study page's data; `last_event` from `settled_cursor`, read before `s` began."""
    study = _study(s, study_id)
    if last_event is None:  # one session: correct on SQLite, where ids commit in order
        last_event = s.scalar(select(func.max(Event.id)).where(Event.study_id == study_id)) or 0
    summary = study_dict(s, study)
    counts = summary["counts"]
    finished = sum(counts[k] for k in ("completed", "failed", "pruned", "stopped") if k in counts)
    # Completed trials are the ones with a value (a diverged one is failed), and this
    # count comes from the status index: counting `value IS NOT NULL` reads every row.
    valued = counts.get("completed", 0)
    top_n = min(TOP_ALWAYS, max_points // 2)
    best = s.execute(
        select(Trial.id, Trial.number, Trial.round_index, Trial.params, Trial.value)
        .where(*_valued(study_id))
        .order_by(*_best_first(study))
        .limit(top_n)
    ).all()
    span = (s.scalar(select(func.max(Trial.number)).where(Trial.study_id == study_id)) or 0) + 1
    # A stride over trial numbers: trials are drawn independently, so every k-th one is
    # an unbiased sample, and coarse-to-fine rounds keep their share of it.
    stride = max(1, math.ceil(span / max(1, max_points - top_n)))
    # By number through the (study_id, number) index: a filter on `number % stride`
    # would read all 50,000 rows to keep 2,000.
    strided = s.execute(
        select(Trial.id, Trial.number, Trial.round_index, Trial.params, Trial.value)
        .where(*_valued(study_id), Trial.number.in_(range(0, span, stride)))
        .order_by(Trial.number)
    ).all()
    chosen = sorted({row.id: row for row in [*best, *strided]}.values(), key=lambda r: r.number)
    paths = list((study.spec.get("space") or {}).keys())
    sample = {
        "ids": [r.id for r in chosen],
        "numbers": [r.number for r in chosen],
        "rounds": [r.round_index for r in chosen],
        "values": [r.value for r in chosen],
        "params": {path: [r.params.get(path) for r in chosen] for path in paths},
    }
    rounds = s.scalars(select(Round).where(Round.study_id == study_id).order_by(Round.index))
    return {
        "study": summary,
        "planned_trials": _planned(study, summary["total_trials"]),
        "finished_trials": finished,
        "valued_trials": valued,
        "records": records(s, study),
        "sample": sample,
        "sample_stride": stride,
        "best_ids": [row.id for row in best],
        "rounds": [{"index": r.index, "box": r.box, "created_at": r.created_at} for r in rounds],
        "last_event_id": last_event,
    }


def curve(s: Session, trial: Trial, *, points: int) -> dict[str, Any]:
    """The trial's latest attempt, every `stride`-th epoch and the last one."""
    last, n = s.execute(
        select(func.max(Metric.epoch), func.count()).where(
            Metric.trial_id == trial.id, Metric.attempt == trial.attempt
        )
    ).one()
    stride = max(1, math.ceil((n or 0) / points))
    rows = s.execute(
        select(Metric.epoch, *(getattr(Metric, k) for k in METRIC_FIELDS))
        .where(
            Metric.trial_id == trial.id,
            Metric.attempt == trial.attempt,
            or_(Metric.epoch % stride == 0, Metric.epoch == last),
        )
        .order_by(Metric.epoch)
    ).all()
    return {
        "trial": trial_dict(trial),
        "stride": stride,
        "epochs": [r[0] for r in rows],
        "metrics": {k: [r[i + 1] for r in rows] for i, k in enumerate(METRIC_FIELDS)},
    }


SORTABLE = ("number", "value", "status", "round", "epochs_done", "started_at", "finished_at")
SORT_PATTERN = rf"^-?({'|'.join(SORTABLE)}|params\..+)$"


def _bad_sort(sort: str, msg: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", "sort"), "msg": msg, "input": sort}]
    )


def _sort_key(study: Study, sort: str) -> list[Any]:
    desc = sort.startswith("-")
    name = sort.lstrip("-")
    if name.startswith("params."):
        path = name.removeprefix("params.")
        dist = (study.spec.get("space") or {}).get(path)
        if dist is None:
            raise _bad_sort(sort, f"the study has no hyperparameter {path!r}")
        element = Trial.params[path]
        column: Any = (
            element.as_float() if dist.get("type") in ("float", "int") else element.as_string()
        )
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


@router.get(
    "/api/dashboard/studies/{study_id}", response_model=StudyOverview, dependencies=[ReadScope]
)
def get_overview(
    study_id: int,
    db: DbDep,
    points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = MAX_POINTS,
) -> dict[str, Any]:
    """Everything the study page draws, aggregated in SQL: counts, records and a sample."""
    # The cursor first: an event that lands while the rest is read is replayed, not missed.
    cursor = settled_cursor(db, study_id)
    with db.session(write=False) as s:
        return overview(s, study_id, max_points=points, last_event=cursor)


@router.get(
    "/api/dashboard/studies/{study_id}/curves", response_model=list[Curve], dependencies=[ReadScope]
)
def get_curves(
    study_id: int,
    db: DbDep,
    top: Annotated[int, Query(ge=1, le=20)] = 5,
    points: Annotated[int, Query(ge=10, le=2000)] = CURVE_POINTS,
) -> list[dict[str, Any]]:
    """Learning curves of the best `top` trials, each downsampled to `points` epochs."""
    with db.session(write=False) as s:
        study = _study(s, study_id)
        trials = s.scalars(
            select(Trial).where(*_valued(study_id)).order_by(*_best_first(study)).limit(top)
        ).all()
        return [curve(s, t, points=points) for t in trials]


@router.get(
    "/api/dashboard/studies/{study_id}/trials",
    response_model=DashboardTrialsPage,
    dependencies=[ReadScope],
)
def get_trials_table(
    study_id: int,
    db: DbDep,
    status: TrialStatus | None = None,
    round: Annotated[int | None, Query(ge=0)] = None,
    sort: Annotated[
        str,
        Query(
            max_length=200,
            pattern=SORT_PATTERN,
            description=f"{', '.join(SORTABLE)} or params.<path>; a leading - reverses",
        ),
    ] = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """One page of the trials table, sorted by any column, hyperparameters included."""
    with db.session(write=False) as s:
        study = _study(s, study_id)
        q = select(Trial).where(Trial.study_id == study_id)
        if status is not None:
            q = q.where(Trial.status == status)
        if round is not None:
            q = q.where(Trial.round_index == round)
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = s.scalars(q.order_by(*_sort_key(study, sort)).limit(limit).offset(offset)).all()
        return {
            "items": [trial_dict(t) for t in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
            "sort": sort,
        }


class Cursor(BaseModel):
    study_id: int
    last_event_id: int = Field(description="follow the study's event stream after this id")


@router.get(
    "/api/dashboard/trials/{trial_id}/cursor", response_model=Cursor, dependencies=[ReadScope]
)
def get_trial_cursor(trial_id: int, db: DbDep) -> dict[str, Any]:
    """Where the event stream of a trial's study is now: a page reads this before loading."""
    with db.session(write=False) as s:
        study_id = s.scalar(select(Trial.study_id).where(Trial.id == trial_id))
    if study_id is None:
        raise NotFound(f"trial {trial_id} does not exist")
    return {"study_id": study_id, "last_event_id": settled_cursor(db, study_id)}


class MetricsTail(BaseModel):
    attempt: int = Field(description="the attempt the rows belong to: a new one starts over")
    rows: list[MetricRead]


@router.get(
    "/api/dashboard/trials/{trial_id}/metrics",
    response_model=MetricsTail,
    dependencies=[ReadScope],
)
def get_metrics_tail(
    trial_id: int,
    db: DbDep,
    after: Annotated[int, Query(ge=0, description="only epochs after this one")] = 0,
) -> dict[str, Any]:
    """The epochs of the trial's latest attempt after `after`: a live page fetches only news."""
    with db.session(write=False) as s:
        trial = s.get(Trial, trial_id)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist")
        rows = s.execute(
            select(Metric.epoch, *(getattr(Metric, k) for k in METRIC_FIELDS))
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
                {"epoch": r[0], **{k: r[i + 1] for i, k in enumerate(METRIC_FIELDS)}} for r in rows
            ],
        }
