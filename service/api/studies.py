"""Routes for studies, specs, trials and workers: what people and programs call."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import (
    MAX_ID,
    DbDep,
    ReadScope,
    SettingsDep,
    StudyId,
    SubmitRate,
    TrialId,
    WriteScope,
    run_read,
)
from service.api.docs import PROBLEM_REF, problem_responses
from service.api.heavy import SpecCheckRate, run_spec_work
from service.api.render import json_bytes
from service.datasets import check_study_data
from service.errors import CaviarError, InvalidSpec
from service.models import StudyStatus, TrialStatus
from service.schemas import (
    MetricRead,
    RoundRead,
    SpecPreview,
    SpecValidation,
    StudiesPage,
    StudyRead,
    StudyRetried,
    TrialDetail,
    TrialsExport,
    TrialsPage,
    WorkerRead,
)
from service.spec import (
    SpecError,
    load_spec_data,
    make_strategy,
    parse_spec,
    preview,
    spec_json_schema,
    total_rounds,
)
from service.studies import (
    cancel_study,
    check_dataset,
    create_study,
    export_csv,
    export_trials,
    get_study,
    get_trial,
    list_rounds,
    list_studies,
    list_trials,
    list_workers,
    retry_failed,
    stop_trial,
    trial_metrics,
    validate_spec,
    zoom_preview,
    zoom_study,
)

router = APIRouter(prefix="/api")

_EXAMPLE_SPEC: dict[str, Any] = {
    "name": "moons-adam",
    "dataset": {"name": "moons", "n_samples": 1000, "noise": 0.2},
    "model": {"hidden_layers": [20, 7, 5], "optimizer": "adam", "epochs": 100},
    "space": {
        "learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0, "scale": "log"},
        "beta1": {"type": "float", "low": 0.8, "high": 0.999, "scale": "one_minus_log"},
        "hidden_layers.0": {"type": "int", "low": 5, "high": 50},
    },
    "strategy": {"type": "random", "trials": 24},
    "objective": {"metric": "dev_accuracy", "direction": "maximize", "at": "best"},
    "execution": {"mode": "caviar", "max_parallel": 8, "seed": 42},
}

SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A search spec (docs/spec.md), as JSON or YAML",
        "content": {
            # YAML is the same document written another way, so the same schema.
            media: {
                "schema": spec_json_schema(),
                "examples": {"random-search": {"value": _EXAMPLE_SPEC}},
            }
            for media in ("application/json", "application/yaml")
        },
    }
}


# What a spec body is read as: JSON, or YAML under any of its media types. Anything else
# is refused, so a web page's form or text/plain body (which a browser sends to any
# origin without asking) is never read as a spec.
JSON_TYPE = "application/json"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SPEC_TYPES = (JSON_TYPE, *YAML_TYPES)


class UnsupportedMediaType(CaviarError):
    """The body's media type is not one this route reads."""

    status = 415
    slug = "unsupported-media-type"


SPEC_BODY_REFUSED: dict[int | str, dict[str, Any]] = {
    415: {
        "description": "The body is not labelled as a spec: application/json or a YAML type",
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }
}


async def read_spec_body(request: Request) -> dict[str, Any]:
    """The request body as a spec: JSON or YAML as its content type says, off the event loop."""
    given = request.headers.get("content-type", "")
    media = given.split(";")[0].strip().lower()
    if media not in SPEC_TYPES:
        raise UnsupportedMediaType(
            f"a spec is read as {', '.join(SPEC_TYPES)}; the body is "
            + (f"{given[:100]!r}" if given else "not labelled (no Content-Type)"),
            accepted=list(SPEC_TYPES),
        )
    raw = await request.body()
    try:  # YAML of up to max_spec_bytes can take a while to parse: not on the event loop
        return await run_spec_work(request, load_spec_data, text=raw, json_only=media == JSON_TYPE)
    except SpecError as exc:  # about the body as a whole: a syntax error, a key twice...
        raise InvalidSpec(errors=[{**e, "loc": "body"} for e in exc.errors]) from None


@router.post(
    "/studies",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyRead,
    dependencies=[WriteScope, SubmitRate],
    openapi_extra=SPEC_BODY,
    responses={**problem_responses(409, 429), **SPEC_BODY_REFUSED},
)
async def post_study(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="the same key with the same spec returns the same study; "
            "with another spec, 422",
        ),
    ] = None,
) -> dict[str, Any]:
    """Validate a search spec, expand it into trials and queue them."""
    data = await read_spec_body(request)

    def create() -> dict[str, Any]:
        study_id = create_study(
            db=db, data=data, settings=settings, idempotency_key=idempotency_key
        )
        return get_study(db=db, study_id=study_id)

    return await run_spec_work(request, create)


@router.get("/studies", response_model=StudiesPage, dependencies=[ReadScope])
def get_studies(
    db: DbDep,
    status: StudyStatus | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """List studies, newest first, filtered by status or by a part of the name."""
    items, total = list_studies(db=db, status=status, name=name, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/studies/{study_id}", response_model=StudyRead, dependencies=[ReadScope])
async def get_one_study(study_id: StudyId, db: DbDep) -> Response:
    """A study: its status, the count of trials in each status and the best trial."""
    # Polled by every dashboard and `submit --wait`: read without a thread hop on SQLite
    # (run_read) and rendered directly, like trials pages.
    study = await run_read(get_study, db=db, study_id=study_id)
    return Response(json_bytes(study), media_type="application/json")


@router.post(
    "/studies/{study_id}/cancel",
    response_model=StudyRead,
    dependencies=[WriteScope],
    responses=problem_responses(409),
)
def post_cancel(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """Cancel a study: waiting trials stop now, running ones after their current epoch."""
    return cancel_study(db=db, study_id=study_id)


@router.post(
    "/studies/{study_id}/retry-failed",
    response_model=StudyRetried,
    dependencies=[WriteScope],
    responses=problem_responses(409),
)
def post_retry_failed(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """Queue the study's failed trials again, as new attempts; 409 on a cancelled study."""
    return retry_failed(db=db, study_id=study_id)


class ZoomRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int | None = Field(None, ge=1, le=20, description="default 2")
    trials_per_round: int | None = Field(None, ge=1, le=10_000)
    keep_top: float | None = Field(None, gt=0, le=1)


@router.post(
    "/studies/{study_id}/zoom",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyRead,
    dependencies=[WriteScope, SubmitRate],
    responses=problem_responses(404, 409, 422, 429),
)
def post_zoom(
    study_id: StudyId, db: DbDep, settings: SettingsDep, body: ZoomRequest | None = None
) -> dict[str, Any]:
    """A coarse-to-fine study whose first box surrounds this study's best trials (lineage kept)."""
    body = body or ZoomRequest()
    child = zoom_study(
        db=db,
        study_id=study_id,
        settings=settings,
        rounds=body.rounds,
        trials_per_round=body.trials_per_round,
        keep_top=body.keep_top,
    )
    return get_study(db=db, study_id=child)


class ZoomPreview(BaseModel):
    spec: dict[str, Any] = Field(
        description="a spec whose space is the box a zoom starts from, on each scale"
    )
    box: dict[str, Any] = Field(description="the box, as a round's box is described")
    kept: int = Field(description="how many of the best trials set the box")


@router.post(
    "/studies/{study_id}/zoom/preview",
    response_model=ZoomPreview,
    dependencies=[ReadScope],
    responses=problem_responses(404, 409, 422),
)
def post_zoom_preview(
    study_id: StudyId, db: DbDep, settings: SettingsDep, body: ZoomRequest | None = None
) -> dict[str, Any]:
    """The region a zoom would sample, written as a spec of its own to read, edit and submit."""
    body = body or ZoomRequest()
    return zoom_preview(
        db=db,
        study_id=study_id,
        settings=settings,
        rounds=body.rounds,
        trials_per_round=body.trials_per_round,
        keep_top=body.keep_top,
    )


@router.get("/studies/{study_id}/trials", response_model=TrialsPage, dependencies=[ReadScope])
async def get_trials(
    study_id: StudyId,
    db: DbDep,
    status: TrialStatus | None = None,
    round: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    sort: Annotated[
        Literal["number", "value"],
        Query(description="number: in creation order; value: best objective first"),
    ] = "number",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """A study's trials, by number or best objective first, filtered by status or round."""
    items, total = await run_read(
        list_trials,
        db=db,
        study_id=study_id,
        status=status,
        round_index=round,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    page = {"items": items, "total": total, "limit": limit, "offset": offset}
    # The busiest read (dashboards and scripts poll it): rendered here rather than
    # validated again against TrialsPage, a quarter of its CPU. The document still says
    # TrialsPage, and the schemathesis suite checks every answer against it.
    return Response(json_bytes(page), media_type="application/json")


@router.get(
    "/studies/{study_id}/trials.csv",
    dependencies=[ReadScope],
    response_class=Response,
    responses={
        200: {
            "description": "one row per trial: fixed columns, param.<path>, final.<metric>",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def get_trials_csv(study_id: StudyId, db: DbDep) -> Response:
    """Every trial as CSV: each param and each final metric has a column."""
    text = export_csv(export_trials(db=db, study_id=study_id))
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="study-{study_id}-trials.csv"'},
    )


@router.get(
    "/studies/{study_id}/trials.json", response_model=TrialsExport, dependencies=[ReadScope]
)
def get_trials_json(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """Every trial as a flat JSON row, with the same columns as trials.csv."""
    return export_trials(db=db, study_id=study_id)


@router.get("/studies/{study_id}/rounds", response_model=list[RoundRead], dependencies=[ReadScope])
def get_rounds(study_id: StudyId, db: DbDep) -> list[dict[str, Any]]:
    """The study's rounds and the box each sampled (coarse-to-fine zooms in round by round)."""
    return list_rounds(db=db, study_id=study_id)


@router.post(
    "/specs/validate",
    response_model=SpecValidation,
    dependencies=[ReadScope, SpecCheckRate],
    openapi_extra=SPEC_BODY,
    responses={**problem_responses(429), **SPEC_BODY_REFUSED},
)
async def post_validate(request: Request, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    """Check a spec without queueing anything; 422 names every wrong field."""
    data = await read_spec_body(request)

    def validate() -> dict[str, Any]:
        # The checks a submission makes (every trial of round 1 included), and no more:
        # the trials are counted, not drawn again.
        spec = validate_spec(data, settings=settings)
        check_dataset(db=db, spec=spec)
        check_study_data(db=db, spec=spec, settings=settings)
        return {
            "valid": True,
            "trials": make_strategy(spec).trials_in_round(0),
            "rounds": total_rounds(spec),
            "spec": spec.model_dump(mode="json"),
        }

    return await run_spec_work(request, validate)


@router.post(
    "/specs/preview",
    response_model=SpecPreview,
    dependencies=[ReadScope, SpecCheckRate],
    openapi_extra=SPEC_BODY,
    responses={**problem_responses(429), **SPEC_BODY_REFUSED},
)
async def post_preview(
    request: Request, settings: SettingsDep, n: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    """Where the first n samples of each hyperparameter would land, without queueing."""
    data = await read_spec_body(request)

    def show() -> dict[str, Any]:
        # The spec's checks but the one of every trial: a preview draws n trials, no more.
        try:
            spec = parse_spec(data, settings=settings, check_trials=False)
        except SpecError as exc:
            raise InvalidSpec(errors=exc.errors) from None
        return preview(spec, n)

    return await run_spec_work(request, show)


@router.get("/trials/{trial_id}", response_model=TrialDetail, dependencies=[ReadScope])
def get_one_trial(trial_id: TrialId, db: DbDep) -> dict[str, Any]:
    """A trial: its status, config, sampled params, value, attempts and errors."""
    return get_trial(db=db, trial_id=trial_id)


@router.get("/trials/{trial_id}/metrics", response_model=list[MetricRead], dependencies=[ReadScope])
def get_metrics(
    trial_id: TrialId,
    db: DbDep,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="at most this many epochs (default: all)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="skip this many first")] = 0,
) -> list[dict[str, Any]]:
    """The learning curve of the trial's latest attempt: one row per epoch, in order."""
    return trial_metrics(db=db, trial_id=trial_id, limit=limit, offset=offset)


@router.post(
    "/trials/{trial_id}/stop",
    response_model=TrialDetail,
    dependencies=[WriteScope],
    responses=problem_responses(409),
)
def post_stop(trial_id: TrialId, db: DbDep) -> dict[str, Any]:
    """Stop a trial: now if it waits, after its current epoch if it runs."""
    return stop_trial(db=db, trial_id=trial_id)


@router.get("/workers", response_model=list[WorkerRead], dependencies=[ReadScope])
def get_workers(db: DbDep, settings: SettingsDep) -> list[dict[str, Any]]:
    """Workers seen in the last hour: alive or not, what each runs, its last heartbeat."""
    return list_workers(db=db, lease_seconds=settings.lease_seconds)
