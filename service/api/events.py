"""Server-sent events of a study: trials starting, learning, finishing; rounds; the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import DbDep, ReadScope
from service.db import Database
from service.errors import NotFound
from service.events import events_after
from service.models import TERMINAL_STUDY, Study

router = APIRouter(prefix="/api")

POLL_SECONDS = 0.5  # how soon a new event reaches an idle stream
KEEPALIVE_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream


def _read(db: Database, study_id: int, after: int) -> tuple[list[dict[str, Any]], bool]:
    with db.session(write=False) as s:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        ended = study.status in TERMINAL_STUDY
        return events_after(s, study_id=study_id, after=after), ended


def _frame(event: dict[str, Any]) -> str:
    payload = {"trial_id": event["trial_id"], "at": event["at"], **event["data"]}
    data = json.dumps(payload, separators=(",", ":"), default=str)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"


@router.get(
    "/studies/{study_id}/events",
    dependencies=[ReadScope],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an event stream"}},
)
async def study_events(
    study_id: int,
    request: Request,
    db: DbDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, description="resume after this event id")] = None,
    follow: Annotated[bool, Query(description="keep the stream open until the study ends")] = True,
) -> StreamingResponse:
    """The study's events as server-sent events; `Last-Event-ID` resumes without a gap.

    Each event has an `id`, a type (`trial.started`, `trial.metrics`, `trial.finished`,
    `round.created`, `study.finished`, ...) and JSON data. The stream ends after the
    study has ended and every event has been sent.
    """
    start = after or 0
    if last_event_id and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id))
    first, _ = await run_in_threadpool(_read, db, study_id, start)  # 404 before streaming

    async def stream() -> AsyncIterator[str]:
        cursor = start
        batch = first
        idle = 0.0
        yield f"retry: {int(POLL_SECONDS * 2000)}\n\n"
        while True:
            for event in batch:
                cursor = event["id"]
                yield _frame(event)
            if batch:
                idle = 0.0
            batch, ended = await run_in_threadpool(_read, db, study_id, cursor)
            if batch:
                continue
            if ended or not follow:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
