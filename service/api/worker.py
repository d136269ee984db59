"""The worker protocol under /api/worker/: register, claim, heartbeat, metrics, finish,
checkpoints, and the files of uploaded data sets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.api.deps import MAX_ID, DbDep, SettingsDep, TrialId, WorkerScope
from service.api.render import json_bytes
from service.checkpoints import checkpoint_content, store_checkpoint
from service.datasets import dataset_content
from service.models import TrialStatus
from service.queue import (
    claim_trials,
    finish_trial,
    finish_trials,
    heartbeat,
    register_worker,
    release_trial,
    report_metrics,
    trials_waiting,
)
from service.schemas import (
    ClaimRequest,
    ClaimResponse,
    FinishReport,
    FinishResponse,
    LeaseRequest,
    MetricsReport,
    StopFlag,
    WorkerRegister,
    WorkerRegistered,
)

router = APIRouter(prefix="/api/worker", dependencies=[WorkerScope], tags=["worker"])


@router.post("/register", response_model=WorkerRegistered)
def post_register(body: WorkerRegister, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    """Announce a worker process; returns its id and the lease timing to follow."""
    worker_id = register_worker(db=db, name=body.name, host=body.host, pid=body.pid)
    return {
        "worker_id": worker_id,
        "lease_seconds": settings.lease_seconds,
        "heartbeat_seconds": settings.heartbeat_seconds,
    }


class FinishedTrial(FinishReport):
    trial_id: int


class ClaimAndReport(ClaimRequest):
    """A claim that also reports the trials finished since the last one: short trials
    then cost one round trip and one transaction per batch, not per trial."""

    max_trials: int = Field(1, ge=0, le=64, description="0 only reports")
    finished: list[FinishedTrial] = Field(default_factory=list, max_length=64)


class FinishAnswer(BaseModel):
    trial_id: int
    status: TrialStatus | None = Field(description="the trial's new status; null if refused")
    error: str | None = Field(description="why a result was refused (the lease was lost)")


class ClaimAndReportResponse(ClaimResponse):
    finished: list[FinishAnswer]
    waiting: bool = Field(
        False,
        description="no trial was leased, but queued ones wait for a free slot (a study at "
        "its max_parallel, a panda study's running trial, a coarse-to-fine round being "
        "planned): the queue is not empty",
    )


@router.post("/claim", response_model=ClaimAndReportResponse)
def post_claim(body: ClaimAndReport, db: DbDep, settings: SettingsDep) -> Response:
    """Report finished trials, then lease up to max_trials queued ones (maybe none)."""
    answers = []
    if body.finished:
        # One dump of the validated body, not one per trial and epoch.
        answers = finish_trials(db=db, results=body.model_dump(include={"finished"})["finished"])
    claimed = []
    if body.max_trials:
        claimed = claim_trials(
            db=db,
            worker_id=body.worker_id,
            max_trials=body.max_trials,
            lease_seconds=settings.lease_seconds,
            caviar_checkpoint_seconds=settings.caviar_checkpoint_seconds,
        )
    # The busiest route: rendered here, not validated again against the response model
    # (which the document still shows, and the contract tests check answers against).
    content: dict[str, Any] = {"trials": [c.__dict__ for c in claimed], "finished": answers}
    if body.max_trials and not claimed:
        content["waiting"] = trials_waiting(db=db)
    return Response(json_bytes(content), media_type="application/json")


@router.post("/trials/{trial_id}/heartbeat", response_model=StopFlag)
def post_heartbeat(
    trial_id: int, body: LeaseRequest, db: DbDep, settings: SettingsDep
) -> dict[str, bool]:
    """Extend the lease; 409 once it is lost. Says whether the trial should stop."""
    stop = heartbeat(
        db=db,
        trial_id=trial_id,
        lease_token=body.lease_token,
        lease_seconds=settings.lease_seconds,
    )
    return {"stop": stop}


@router.post("/trials/{trial_id}/metrics", response_model=StopFlag)
def post_metrics(
    trial_id: int, body: MetricsReport, db: DbDep, settings: SettingsDep
) -> dict[str, bool]:
    """Store a batch of epochs (re-sent epochs are ignored); 409 once the lease is lost."""
    stop = report_metrics(
        db=db,
        trial_id=trial_id,
        lease_token=body.lease_token,
        epochs=[e.model_dump() for e in body.epochs],
        lease_seconds=settings.lease_seconds,
    )
    return {"stop": stop}


@router.post("/trials/{trial_id}/finish", response_model=FinishResponse)
def post_finish(trial_id: int, body: FinishReport, db: DbDep) -> dict[str, Any]:
    """Record the trial's end and its last epochs; 409 once the lease is lost."""
    status = finish_trial(
        db=db,
        trial_id=trial_id,
        lease_token=body.lease_token,
        outcome=body.outcome,
        error=body.error,
        epochs=[e.model_dump() for e in body.epochs],
    )
    return {"status": status}


@router.post("/trials/{trial_id}/release", status_code=204)
def post_release(trial_id: int, body: LeaseRequest, db: DbDep) -> None:
    """Hand the trial back to the queue without counting a retry (worker shutting down)."""
    release_trial(db=db, trial_id=trial_id, lease_token=body.lease_token)


class CheckpointStored(BaseModel):
    checkpoint_id: int


@router.post(
    "/trials/{trial_id}/checkpoints",
    response_model=CheckpointStored,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def post_checkpoint(
    trial_id: TrialId,
    request: Request,
    db: DbDep,
    epoch: Annotated[int, Query(ge=1)],
    x_lease_token: Annotated[str, Header()],
) -> dict[str, int]:
    """Store the trial's training state after `epoch` (trainer.Checkpoint bytes)."""
    content = await request.body()
    checkpoint_id = await run_in_threadpool(
        lambda: store_checkpoint(
            db=db, trial_id=trial_id, lease_token=x_lease_token, epoch=epoch, content=content
        )
    )
    return {"checkpoint_id": checkpoint_id}


@router.get(
    "/checkpoints/{checkpoint_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
def get_checkpoint(checkpoint_id: Annotated[int, Path(ge=1, le=MAX_ID)], db: DbDep) -> Response:
    """A checkpoint's bytes, for the worker that resumes or forks from it."""
    return Response(
        checkpoint_content(db=db, checkpoint_id=checkpoint_id),
        media_type="application/octet-stream",
    )


@router.get(
    "/datasets/{dataset_id}",
    response_class=Response,
    responses={
        200: {
            "description": "the file's bytes, exactly as uploaded",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "headers": {
                "ETag": {"description": '"<sha256>"', "schema": {"type": "string"}},
                "X-Caviar-Sha256": {
                    "description": "sha256 of the body",
                    "schema": {"type": "string"},
                },
                "X-Caviar-Format": {"description": "csv or npz", "schema": {"type": "string"}},
            },
        },
        304: {"description": "If-None-Match named this content's ETag: the cached copy is good"},
    },
)
def get_dataset_content(
    dataset_id: str,
    db: DbDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """An uploaded data set's bytes, for a worker to cache by sha256."""
    content, meta = dataset_content(db=db, dataset_id=dataset_id)
    etag = f'"{meta["sha256"]}"'
    headers = {
        "etag": etag,
        "x-caviar-sha256": meta["sha256"],
        "x-caviar-format": meta["format"],
        "cache-control": "private, max-age=31536000, immutable",
        "content-disposition": f'attachment; filename="{dataset_id}.{meta["format"]}"',
    }
    if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/octet-stream", headers=headers)
