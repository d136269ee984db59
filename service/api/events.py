"""Server-sent events of a study: trials starting, learning, finishing; rounds; the end.

The route only resumes, subscribes and answers; reading, waking and framing are
service.events' (read, listen, stream).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import DbDep, ReadScope
from service.events import Wakeup, listener_for, stream_frames
from service.events.stream import read_events

router = APIRouter(prefix="/api")


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
    # Subscribed before the first read: a notification that arrives between that read
    # and the first wait is not lost.
    listener = listener_for(db) if follow else None
    wakeup = listener.subscribe(study_id) if listener is not None else Wakeup(None, study_id)
    try:
        first, _, _ = await read_events(db, study_id, start)  # 404 before streaming
    except BaseException:
        wakeup.close()
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
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
