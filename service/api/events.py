"""Server-sent events of a study: trials starting, learning, finishing; rounds; the end.

The route only resumes, subscribes and answers; reading, waking and framing are
service.events' (read, listen, stream).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.deps import DbDep, ReadScope, StudyId, caller_key
from service.api.docs import problem_responses
from service.events import Wakeup, listener_for, stream_frames
from service.events.stream import read_events

router = APIRouter(prefix="/api")


class SlotStream(StreamingResponse):
    """A stream that gives its slot back when the response ends, however it ends (its
    frames may never be iterated at all if the client left at once)."""

    def __init__(self, content: Any, *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


@router.get(
    "/studies/{study_id}/events",
    dependencies=[ReadScope],
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "an event stream"},
        429: {
            **problem_responses(429)[429],
            "description": "This caller holds its most event streams; see Retry-After",
        },
    },
)
async def study_events(
    study_id: StudyId,
    request: Request,
    db: DbDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="resume after this event id")
    ] = None,
    follow: Annotated[bool, Query(description="keep the stream open until the study ends")] = True,
) -> StreamingResponse:
    """The study's events as server-sent events; `Last-Event-ID` resumes without a gap.

    Each event has an `id`, a type (`trial.started`, `trial.metrics`, `trial.finished`,
    `round.created`, `study.finished`, ...) and JSON data. The stream ends after the
    study has ended and every event has been sent. A caller holds at most
    `max_streams_per_client` streams at once (429 beyond), the service `max_streams`
    (503 beyond), both with Retry-After.
    """
    start = after or 0
    if last_event_id and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id))
    slots, key = request.app.state.streams, caller_key(request)
    slots.acquire(key)  # 429 or 503 before any work
    wakeup = None
    try:
        # Subscribed before the first read: a notification that arrives between that read
        # and the first wait is not lost.
        listener = listener_for(db) if follow else None
        wakeup = listener.subscribe(study_id) if listener is not None else Wakeup(None, study_id)
        first, _, _ = await read_events(db, study_id, start)  # 404 before streaming
    except BaseException:
        if wakeup is not None:
            wakeup.close()
        slots.release(key)
        raise
    frames = stream_frames(
        db,
        study_id=study_id,
        start=start,
        first=first,
        wakeup=wakeup,
        follow=follow,
        disconnected=request.is_disconnected,
    )
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return SlotStream(
        frames, release=lambda: slots.release(key), media_type="text/event-stream", headers=headers
    )
