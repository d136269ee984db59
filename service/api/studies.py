"""Routes for studies, specs, trials and workers: what people and programs call."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Header, Query, Request, status
from sqlalchemy import select

from service.api.deps import DbDep, ReadScope, SettingsDep, WriteScope
from service.db import db_epoch
from service.errors import InvalidSpec
from service.models import StudyStatus, Trial, TrialStatus, Worker
from service.schemas import (
    MetricRead,
    RoundRead,
    SpecValidation,
    StudiesPage,
    StudyRead,
    TrialDetail,
    TrialsPage,
    WorkerRead,
)
from service.spec import plan_round, total_rounds
from service.studies import (
    cancel_study,
    create_study,
    get_study,
    get_trial,
    list_rounds,
    list_studies,
    list_trials,
    retry_failed,
    stop_trial,
    trial_metrics,
    validate_spec,
)

router = APIRouter(prefix="/api")

SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def read_spec_body(request: Request) -> Any:
    """The request body as a spec: YAML when the content type says so, JSON otherwise."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    try:
        data = yaml.safe_load(raw.decode("utf-8")) if "yaml" in content_type else json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidSpec(
            errors=[{"loc": "body", "msg": f"not valid {content_type}: {exc}", "input": None}]
        ) from None
    if not isinstance(data, dict):
        raise InvalidSpec(
            errors=[
                {"loc": "body", "msg": "a spec must be a mapping", "input": type(data).__name__}
            ]
        )
    return data


@router.post(
    "/studies",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyRead,
    dependencies=[WriteScope],
    openapi_extra=SPEC_BODY,
)
async def post_study(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Validate a search spec, expand it into trials and queue them."""
    data = await read_spec_body(request)
    study_id = create_study(db=db, data=data, settings=settings, idempotency_key=idempotency_key)
    return get_study(db=db, study_id=study_id)


@router.get("/studies", response_model=StudiesPage, dependencies=[ReadScope])
def get_studies(
    db: DbDep,
    status: StudyStatus | None = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """List studies, newest first, filtered by status or by a part of the name."""
    items, total = list_studies(db=db, status=status, name=name, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/studies/{study_id}", response_model=StudyRead, dependencies=[ReadScope])
def get_one_study(study_id: int, db: DbDep) -> dict[str, Any]:
    """A study: its status, the count of trials in each status and the best trial."""
    return get_study(db=db, study_id=study_id)


@router.post("/studies/{study_id}/cancel", response_model=StudyRead, dependencies=[WriteScope])
def post_cancel(study_id: int, db: DbDep) -> dict[str, Any]:
    """Cancel a study: waiting trials stop now, running ones after their current epoch."""
    return cancel_study(db=db, study_id=study_id)


@router.post(
    "/studies/{study_id}/retry-failed", response_model=StudyRead, dependencies=[WriteScope]
)
def post_retry_failed(study_id: int, db: DbDep) -> dict[str, Any]:
    """Queue the study's failed and stopped trials again, as new attempts."""
    return retry_failed(db=db, study_id=study_id)


@router.get("/studies/{study_id}/trials", response_model=TrialsPage, dependencies=[ReadScope])
def get_trials(
    study_id: int,
    db: DbDep,
    status: TrialStatus | None = None,
    round: Annotated[int | None, Query(ge=0)] = None,
    sort: Annotated[str, Query(pattern="^(number|value)$")] = "number",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """A study's trials, by number or best objective first, filtered by status or round."""
    items, total = list_trials(
        db=db,
        study_id=study_id,
        status=status,
        round_index=round,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/studies/{study_id}/rounds", response_model=list[RoundRead], dependencies=[ReadScope])
def get_rounds(study_id: int, db: DbDep) -> list[dict[str, Any]]:
    """The study's rounds and the box each sampled (coarse-to-fine zooms in round by round)."""
    return list_rounds(db=db, study_id=study_id)


@router.post(
    "/specs/validate",
    response_model=SpecValidation,
    dependencies=[ReadScope],
    openapi_extra=SPEC_BODY,
)
async def post_validate(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Check a spec without queueing anything; 422 names every wrong field."""
    spec = validate_spec(await read_spec_body(request), settings=settings)
    _, plans = plan_round(spec, round_index=0)
    return {
        "valid": True,
        "trials": len(plans),
        "rounds": total_rounds(spec),
        "spec": spec.model_dump(mode="json"),
    }


@router.post("/specs/preview", dependencies=[ReadScope], openapi_extra=SPEC_BODY)
async def post_preview(
    request: Request, settings: SettingsDep, n: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    """Where the first n samples of each hyperparameter would land, without queueing."""
    from service.spec import preview

    spec = validate_spec(await read_spec_body(request), settings=settings)
    return preview(spec, n)


@router.get("/trials/{trial_id}", response_model=TrialDetail, dependencies=[ReadScope])
def get_one_trial(trial_id: int, db: DbDep) -> dict[str, Any]:
    """A trial: its status, config, sampled params, value, attempts and errors."""
    return get_trial(db=db, trial_id=trial_id)


@router.get("/trials/{trial_id}/metrics", response_model=list[MetricRead], dependencies=[ReadScope])
def get_metrics(trial_id: int, db: DbDep) -> list[dict[str, Any]]:
    """The learning curve of the trial's latest attempt: one row per epoch."""
    return trial_metrics(db=db, trial_id=trial_id)


@router.post("/trials/{trial_id}/stop", response_model=TrialDetail, dependencies=[WriteScope])
def post_stop(trial_id: int, db: DbDep) -> dict[str, Any]:
    """Stop a trial: now if it waits, after its current epoch if it runs."""
    return stop_trial(db=db, trial_id=trial_id)


@router.get("/workers", response_model=list[WorkerRead], dependencies=[ReadScope])
def get_workers(db: DbDep, settings: SettingsDep) -> list[dict[str, Any]]:
    """Workers seen in the last hour: alive or not, what each runs, its last heartbeat."""
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
                "alive": now - w.last_heartbeat < settings.lease_seconds,
                "seconds_since_heartbeat": round(now - w.last_heartbeat, 3),
                "trials_done": w.trials_done,
                "running": running.get(w.id, []),
            }
            for w in workers
        ]
