"""Routes the dashboard needs beyond the public API, thin over service.dashboard's reads.

It also signs a browser in and out, and serves plotly.js from the plotly Python package,
so the dashboard works offline.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from service.api.deps import MAX_ID, DbDep, ReadScope, StudyId, TrialId
from service.auth import COOKIE, credentials, login_page, safe_next, same_origin
from service.dashboard import (
    CURVE_POINTS,
    MAX_POINTS,
    SORT_PATTERN,
    SORTABLE,
    UnknownSort,
    best_curves,
    metrics_tail,
    study_overview,
    trial_cursor,
    trials_table,
)
from service.errors import Unauthorized
from service.models import TrialStatus
from service.schemas import MetricRead, RoundRead, StudyRead, TrialRead

# One router for both: app.py includes it with one line, before the /static mount.
router = APIRouter(tags=["dashboard"])


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
    finished_trials: int = Field(description="trials that ran and ended (StudyRead's)")
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


# --- routes ----------------------------------------------------------------------------


@router.get(
    "/api/dashboard/studies/{study_id}", response_model=StudyOverview, dependencies=[ReadScope]
)
def get_overview(
    study_id: StudyId,
    db: DbDep,
    points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = MAX_POINTS,
) -> dict[str, Any]:
    """Everything the study page draws, aggregated in SQL: counts, records and a sample."""
    return study_overview(db=db, study_id=study_id, max_points=points)


@router.get(
    "/api/dashboard/studies/{study_id}/curves", response_model=list[Curve], dependencies=[ReadScope]
)
def get_curves(
    study_id: StudyId,
    db: DbDep,
    top: Annotated[int, Query(ge=1, le=20)] = 5,
    points: Annotated[int, Query(ge=10, le=2000)] = CURVE_POINTS,
) -> list[dict[str, Any]]:
    """Learning curves of the best `top` trials, each downsampled to `points` epochs."""
    return best_curves(db=db, study_id=study_id, top=top, points=points)


@router.get(
    "/api/dashboard/studies/{study_id}/trials",
    response_model=DashboardTrialsPage,
    dependencies=[ReadScope],
)
def get_trials_table(
    study_id: StudyId,
    db: DbDep,
    status: TrialStatus | None = None,
    round: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    sort: Annotated[
        str,
        Query(
            max_length=200,
            pattern=SORT_PATTERN,
            description=f"{', '.join(SORTABLE)} or params.<path>; a leading - reverses",
        ),
    ] = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """One page of the trials table, sorted by any column, hyperparameters included."""
    try:
        return trials_table(
            db=db,
            study_id=study_id,
            status=status,
            round_index=round,
            sort=sort,
            limit=limit,
            offset=offset,
        )
    except UnknownSort as exc:
        error = {"type": "value_error", "loc": ("query", "sort"), "msg": str(exc)}
        raise RequestValidationError([{**error, "input": sort}]) from None


class Cursor(BaseModel):
    study_id: int
    last_event_id: int = Field(description="follow the study's event stream after this id")


@router.get(
    "/api/dashboard/trials/{trial_id}/cursor", response_model=Cursor, dependencies=[ReadScope]
)
def get_trial_cursor(trial_id: TrialId, db: DbDep) -> dict[str, Any]:
    """Where the event stream of a trial's study is now: a page reads this before loading."""
    return trial_cursor(db=db, trial_id=trial_id)


class MetricsTail(BaseModel):
    attempt: int = Field(description="the attempt the rows belong to: a new one starts over")
    rows: list[MetricRead]


@router.get(
    "/api/dashboard/trials/{trial_id}/metrics",
    response_model=MetricsTail,
    dependencies=[ReadScope],
)
def get_metrics_tail(
    trial_id: TrialId,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only epochs after this one")] = 0,
) -> dict[str, Any]:
    """The epochs of the trial's latest attempt after `after`: a live page fetches only news."""
    return metrics_tail(db=db, trial_id=trial_id, after=after)
