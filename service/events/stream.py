"""A study's event stream in server-sent-events frames: read, send, wait for news, repeat.

Streams read the `events` table, so every replica serves the same events. A stream wakes
when its Wakeup is set (service/events/listen.py, PostgreSQL) and otherwise polls, so a
lost notification costs at most POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from anyio import to_thread

from service.db import Database
from service.events.listen import Wakeup
from service.events.read import READ_LIMIT, read_settled

POLL_SECONDS = 0.5  # how soon a new event reaches an idle stream with no notification
KEEPALIVE_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream
# Reads of one stream are at least this far apart: a busy study notifies hundreds of
# times a second, and each stream then sends what arrived meanwhile in one batch.
MIN_READ_SECONDS = 0.05


def frame(event: dict[str, Any]) -> str:
    """One event as a server-sent-events frame: its id, its type, its data as JSON."""
    payload = {"trial_id": event["trial_id"], "at": event["at"], **event["data"]}
    data = json.dumps(payload, separators=(",", ":"), default=str)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"


async def read_events(
    db: Database, study_id: int, after: int
) -> tuple[list[dict[str, Any]], bool, bool]:
    """`read_settled` on a worker thread: (events, whether the study ended, complete)."""
    return await to_thread.run_sync(read_settled, db, study_id, after)


async def stream_frames(
    db: Database,
    *,
    study_id: int,
    start: int,
    first: list[dict[str, Any]],
    wakeup: Wakeup,
    follow: bool,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The frames of the study's events after `start` (`first` already read), until the
    study has ended and every event is sent (or, unless `follow`, until the events so far
    are), or the client has gone. Closes `wakeup` at the end."""
    cursor = start
    batch = first
    last_read = last_sent = time.monotonic()
    try:
        yield f"retry: {int(POLL_SECONDS * 2000)}\n\n"
        while True:
            for event in batch:
                cursor = event["id"]
                yield frame(event)
            if batch:
                last_sent = time.monotonic()
            if len(batch) < READ_LIMIT:  # unless draining a backlog, read at a bounded rate
                since = time.monotonic() - last_read
                await asyncio.sleep(max(0.0, MIN_READ_SECONDS - since))
            wakeup.clear()  # a notification from here on makes the next wait return
            last_read = time.monotonic()
            batch, ended, complete = await read_events(db, study_id, cursor)
            if batch:
                continue
            if complete and (ended or not follow):
                return
            if await disconnected():
                return
            await wakeup.wait(POLL_SECONDS if complete else MIN_READ_SECONDS)
            if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
    finally:
        wakeup.close()
