"""The worker protocol under /api/worker/: register, claim, heartbeat, metrics, finish,
checkpoints, and the files of uploaded data sets."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import pydantic_core
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.deps import MAX_ID, DbDep, SettingsDep, TrialId, WorkerScope
from service.api.docs import problem_responses
from service.api.render import json_bytes
from service.checkpoints import checkpoint_content, store_checkpoint
from service.datasets import dataset_content
from service.limits import BodyTooLarge
from service.models import TrialStatus
from service.protocol import (
    MAX_EPOCHS_PER_REPORT,
    MAX_RESULTS_PER_CLAIM,
    MAX_WORKER_BODY_BYTES,
    ClaimAndReport,
    ClaimAndReportHead,
    ClaimAndReportResponse,
    FinishReport,
    FinishReportHead,
    FinishResponse,
    LeaseRequest,
    MetricsReport,
    MetricsReportHead,
    StopFlag,
    WorkerRegister,
    WorkerRegistered,
)
from service.queue import (
    Offers,
    claim_and_report,
    finish_trial,
    heartbeat,
    register_worker,
    release_trial,
    report_metrics,
)
from service.settings import Settings

router = APIRouter(prefix="/api/worker", dependencies=[WorkerScope], tags=["worker"])

M = TypeVar("M", bound=BaseModel)
SMALL_BODY_BYTES = 64 * 1024  # register, heartbeat, release: a few fields


# --- bodies -------------------------------------------------------------------------------
# Worker bodies are read here rather than by FastAPI, which parses and validates a JSON
# body on the event loop before the route runs: one 50 MB claim held every request for a
# minute. Here the bytes (at most MAX_WORKER_BODY_BYTES) are awaited on the loop, then
# parsed (Rust, in one pass) on the thread pool; results and epochs are counted before
# anything is validated, and the epochs and checkpoints of a result are validated only
# once its lease is known to hold, against its trial (service.queue.results). The
# document shows the bodies in full (FinishReport), the routes read their heads.


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the operation's JSON body (inlined)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The request's bytes, 413 past `limit` (told by Content-Length, or as they come)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(model: type[M], raw: bytes) -> M:
    """`raw` as `model`, or RequestValidationError (a 422 naming each wrong field).

    JSON's NaN and Infinity literals are read (Python's json writes them; a metric that
    is not finite is stored as null), a lone UTF-16 surrogate is not JSON. Results and
    epochs are counted before their items are validated.
    """
    try:
        data = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"not valid JSON: {exc}"}]
        ) from None
    _count(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _count(data: Any) -> None:
    """RequestValidationError if `data` holds more results or epochs than a body may."""
    if not isinstance(data, dict):
        return
    results = data.get("finished")
    entries = results if isinstance(results, list) else [data]
    if len(entries) > MAX_RESULTS_PER_CLAIM:
        _too_many("finished", f"at most {MAX_RESULTS_PER_CLAIM} results in one claim")
    epochs = 0
    for entry in entries:
        if isinstance(entry, dict):
            rows, curve = entry.get("epochs"), entry.get("curve")
            epochs += len(rows) if isinstance(rows, list) else 0
            column = curve.get("epoch") if isinstance(curve, dict) else None
            epochs += len(column) if isinstance(column, list) else 0
    if epochs > MAX_EPOCHS_PER_REPORT:
        _too_many("epochs", f"at most {MAX_EPOCHS_PER_REPORT} epochs in one body")


def _too_many(loc: str, msg: str) -> None:
    raise RequestValidationError([{"type": "too_long", "loc": ("body", loc), "msg": msg}])


def _dump_result(report: FinishReportHead, trial_id: int) -> dict[str, Any]:
    """A result as the queue takes it (see service.queue.finish_trials): its epochs and
    checkpoint still as read, for the queue to validate once the lease holds."""
    return {
        "trial_id": trial_id,
        "lease_token": report.lease_token,
        "outcome": report.outcome,
        "error": report.error,
        "seconds": report.seconds,
        "epochs": report.epochs,
        "curve": report.curve,
        "checkpoint": report.checkpoint,
        "gradient_check": report.gradient_check.model_dump() if report.gradient_check else None,
        "value": report.value,
    }


# --- routes -------------------------------------------------------------------------------


@router.post("/register", response_model=WorkerRegistered, openapi_extra=json_body(WorkerRegister))
async def post_register(request: Request, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    """Announce a worker process; returns its id and the lease timing to follow."""
    raw = await read_body(request, SMALL_BODY_BYTES)

    def register() -> str:
        body = parse_body(WorkerRegister, raw)
        offers = Offers(trainer=body.trainer, entrypoints=tuple(body.entrypoints))
        return register_worker(db=db, name=body.name, host=body.host, pid=body.pid, offers=offers)

    return {
        "worker_id": await run_in_threadpool(register),
        "lease_seconds": settings.lease_seconds,
        "heartbeat_seconds": settings.heartbeat_seconds,
    }


@router.post(
    "/claim",
    response_model=ClaimAndReportResponse,
    openapi_extra=json_body(ClaimAndReport),
    responses=problem_responses(404),
)
async def post_claim(request: Request, db: DbDep, settings: SettingsDep) -> Response:
    """Report finished trials, then lease up to max_trials queued ones (maybe none).

    With `target_seconds`, the lease holds as many trials as the studies' observed trial
    durations fit in that time, and never a trial behind one of a study whose trials are
    longer or not known yet.
    """
    raw = await read_body(request, min(settings.max_body_bytes, MAX_WORKER_BODY_BYTES))
    content = await run_in_threadpool(_claim, raw, db, settings)
    return Response(content, media_type="application/json")


def _claim(raw: bytes, db: Any, settings: Settings) -> bytes:
    body = parse_body(ClaimAndReportHead, raw)
    exchange = claim_and_report(
        db=db,
        worker_id=body.worker_id,
        results=[_dump_result(f, f.trial_id) for f in body.finished],
        max_trials=body.max_trials,
        lease_seconds=settings.lease_seconds,
        caviar_checkpoint_seconds=settings.caviar_checkpoint_seconds,
        target_seconds=body.target_seconds,
        busy_seconds=body.busy_seconds,
        study_id=body.study_id,
    )
    # The busiest route: rendered here, not validated again against the response model
    # (which the document still shows, and the contract tests check answers against).
    return json_bytes(
        {
            "trials": [c.__dict__ for c in exchange.trials],
            "finished": exchange.finished,
            "waiting": exchange.waiting,
        }
    )


@router.post(
    "/trials/{trial_id}/heartbeat", response_model=StopFlag, openapi_extra=json_body(LeaseRequest)
)
async def post_heartbeat(
    trial_id: TrialId, request: Request, db: DbDep, settings: SettingsDep
) -> dict[str, bool]:
    """Extend the lease; 409 once it is lost. Says whether the trial should stop."""
    raw = await read_body(request, SMALL_BODY_BYTES)

    def beat() -> bool:
        body = parse_body(LeaseRequest, raw)
        return heartbeat(
            db=db,
            trial_id=trial_id,
            lease_token=body.lease_token,
            lease_seconds=settings.lease_seconds,
        )

    return {"stop": await run_in_threadpool(beat)}


@router.post(
    "/trials/{trial_id}/metrics", response_model=StopFlag, openapi_extra=json_body(MetricsReport)
)
async def post_metrics(
    trial_id: TrialId, request: Request, db: DbDep, settings: SettingsDep
) -> dict[str, bool]:
    """Store a batch of epochs (re-sent epochs are ignored); 409 once the lease is lost.

    An epoch beyond the trial's own is refused (422).
    """
    raw = await read_body(request, min(settings.max_body_bytes, MAX_WORKER_BODY_BYTES))

    def report() -> bool:
        body = parse_body(MetricsReportHead, raw)
        return report_metrics(
            db=db,
            trial_id=trial_id,
            lease_token=body.lease_token,
            epochs=body.epochs,
            curve=body.curve,
            lease_seconds=settings.lease_seconds,
        )

    return {"stop": await run_in_threadpool(report)}


@router.post(
    "/trials/{trial_id}/finish",
    response_model=FinishResponse,
    openapi_extra=json_body(FinishReport),
)
async def post_finish(
    trial_id: TrialId, request: Request, db: DbDep, settings: SettingsDep
) -> dict[str, Any]:
    """Record the trial's end, its last epochs and checkpoint; 409 once the lease is lost.

    Epochs or a checkpoint that do not fit the trial are refused (422).
    """
    raw = await read_body(request, min(settings.max_body_bytes, MAX_WORKER_BODY_BYTES))

    def finish() -> TrialStatus:
        result = _dump_result(parse_body(FinishReportHead, raw), trial_id)
        return finish_trial(db=db, **result)

    return {"status": await run_in_threadpool(finish)}


@router.post("/trials/{trial_id}/release", status_code=204, openapi_extra=json_body(LeaseRequest))
async def post_release(trial_id: TrialId, request: Request, db: DbDep) -> None:
    """Hand the trial back to the queue without counting a retry (worker shutting down).

    Its next attempt starts from its latest checkpoint.
    """
    raw = await read_body(request, SMALL_BODY_BYTES)

    def release() -> None:
        body = parse_body(LeaseRequest, raw)
        release_trial(db=db, trial_id=trial_id, lease_token=body.lease_token)

    await run_in_threadpool(release)


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
    epoch: Annotated[int, Query(ge=1, le=MAX_ID)],
    x_lease_token: Annotated[str, Header(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")],
) -> dict[str, int]:
    """Store the trial's training state after `epoch`.

    trainer.Checkpoint bytes for the built-in trainer's trials (checked); a task's
    function's own bytes, stored as given.
    """
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
