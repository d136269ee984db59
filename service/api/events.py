"""Server-sent events of a study: trials starting, learning, finishing; rounds; the end.

Streams read the `events` table, so every replica serves the same events. On PostgreSQL
a stream also wakes when any replica commits an event of its study: one thread per
process and database LISTENs on service.events.CHANNEL and wakes the streams waiting on
that study. Polling stays as the fallback (the listener's connection may drop, and
SQLite has no notifications), so a lost notification costs at most POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.deps import DbDep, ReadScope
from service.db import Database
from service.errors import NotFound
from service.events import CHANNEL, ORDER_LOCK, events_after
from service.models import TERMINAL_STUDY, Study

log = logging.getLogger("caviar.service")
router = APIRouter(prefix="/api")

POLL_SECONDS = 0.5  # how soon a new event reaches an idle stream with no notification
KEEPALIVE_SECONDS = 15.0  # a comment line keeps proxies from closing a quiet stream
# Reads of one stream are at least this far apart: a busy study notifies hundreds of
# times a second, and each stream then sends what arrived meanwhile in one batch.
MIN_READ_SECONDS = 0.05
# How long a reader waits for the study's in-flight event writers (service.events): a
# writer that waits on a row lock held by a writer queued behind this reader would
# otherwise wait for it; giving up this soon breaks such a cycle, and the stream
# simply reads again.
ORDER_WAIT = "200ms"
RECONNECT_SECONDS = 2.0  # between attempts of the listener to reach the database
READ_LIMIT = 500  # events per read


class Wakeup:
    """One stream's wish to hear about its study; `wait` returns early when it has news."""

    def __init__(self, listener: Listener | None, study_id: int) -> None:
        self.listener = listener
        self.study_id = study_id
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def set(self) -> None:  # from the listener's thread
        # A stream whose event loop has closed (its server stopped) has nothing to wake.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)

    def clear(self) -> None:
        self.event.clear()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.unsubscribe(self)


class Listener:
    """A thread with its own connection that LISTENs while any stream of this process
    waits, and wakes the streams of the study each notification names.

    It starts with the first waiting stream and ends (closing its connection) soon after
    the last one leaves, so an idle replica holds no extra connection. Streams are held
    weakly: one dropped without closing (a client gone before its first byte) cannot keep
    the thread alive.
    """

    def __init__(self, url: str) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.lock = threading.Lock()
        self.waiting: dict[int, weakref.WeakSet[Wakeup]] = {}
        self.thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while LISTENing; tests wait on it

    def subscribe(self, study_id: int) -> Wakeup:
        wakeup = Wakeup(self, study_id)
        with self.lock:
            self.waiting.setdefault(study_id, weakref.WeakSet()).add(wakeup)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True, name="caviar-listen")
                self.thread.start()
        return wakeup

    def unsubscribe(self, wakeup: Wakeup) -> None:
        with self.lock:
            mine = self.waiting.get(wakeup.study_id)
            if mine is not None:
                mine.discard(wakeup)
                if not mine:
                    del self.waiting[wakeup.study_id]

    def _wake(self, study_id: int | None) -> None:
        with self.lock:
            if study_id is None:
                targets = [w for ws in self.waiting.values() for w in ws]
            else:
                targets = list(self.waiting.get(study_id, ()))
        for wakeup in targets:
            wakeup.set()

    def _idle(self) -> bool:
        """True once no stream waits; the thread is then forgotten and must end, and the
        next stream to subscribe starts another."""
        with self.lock:
            if any(self.waiting.values()):
                return False
            self.waiting.clear()
            self.thread = None
            self.listening.clear()
            return True

    def _run(self) -> None:
        while True:
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    # What was committed before LISTEN took effect is read by this wake.
                    self._wake(None)
                    while not self._idle():
                        for note in conn.notifies(timeout=1.0):
                            self._wake(int(note.payload) if note.payload.isdigit() else None)
                    return
            except Exception as exc:  # the database went away: poll meanwhile, then retry
                self.listening.clear()
                log.warning("event listener: %s; streams poll until it reconnects", exc)
            time.sleep(RECONNECT_SECONDS)
            if self._idle():
                return


_listeners: dict[str, Listener] = {}
_listeners_lock = threading.Lock()


def listener_for(db: Database) -> Listener | None:
    """The process's listener for `db`'s database, or None where there is none (SQLite)."""
    if db.dialect != "postgresql":
        return None
    with _listeners_lock:
        found = _listeners.get(db.url)
        if found is None:
            found = _listeners[db.url] = Listener(db.url)
        return found


# The highest event id handed out so far, of any study (None before the first).
LAST_EVENT_ID = func.pg_sequence_last_value(
    func.pg_get_serial_sequence("events", "id").cast(REGCLASS)
)


def take_order_lock(s: Session, study_id: int) -> bool:
    """Take the study's event order lock exclusively, for this transaction (PostgreSQL).

    Once held, no transaction that took an event id for the study is still running, so
    every id up to the sequence's last value (LAST_EVENT_ID) is settled. False, with the
    transaction rolled back, if the writers kept it longer than ORDER_WAIT: try again.
    """
    s.execute(text(f"SET LOCAL lock_timeout = '{ORDER_WAIT}'"))
    try:
        s.execute(select(func.pg_advisory_xact_lock(ORDER_LOCK, study_id)))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        s.rollback()
        return False
    return True


def _read(db: Database, study_id: int, after: int) -> tuple[list[dict[str, Any]], bool, bool]:
    """(events after `after`, whether the study has ended, whether the read was complete).

    On PostgreSQL the read first takes the study's order lock (see service.events): once
    it has it, no transaction that took an event id for the study is still running, so
    every id up to the sequence's last value is settled. The lock is let go at once and
    the events are read up to that id, so writers wait only for those two statements. If
    the writers take longer than ORDER_WAIT, the read returns nothing, incomplete, and the
    caller reads again shortly.
    """
    with db.session(write=False) as s:
        upto = None
        if db.dialect == "postgresql":
            if not take_order_lock(s, study_id):
                return [], False, False
            # Read under the lock: a study seen ended has its last event at or below `upto`.
            found = s.execute(
                select(Study.status, LAST_EVENT_ID).where(Study.id == study_id)
            ).one_or_none()
            s.commit()  # lets the writers go
            status, upto = (found[0], found[1] or 0) if found else (None, None)
        else:
            status = s.scalar(select(Study.status).where(Study.id == study_id))
        if status is None:
            raise NotFound(f"study {study_id} does not exist")
        ended = status in TERMINAL_STUDY
        events = events_after(s, study_id=study_id, after=after, upto=upto, limit=READ_LIMIT)
        return events, ended, True


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
    # Subscribed before the first read: a notification that arrives between that read
    # and the first wait is not lost.
    listener = listener_for(db) if follow else None
    wakeup = listener.subscribe(study_id) if listener is not None else Wakeup(None, study_id)
    try:
        first, _, _ = await run_in_threadpool(_read, db, study_id, start)  # 404 before streaming
    except BaseException:
        wakeup.close()
        raise

    async def stream() -> AsyncIterator[str]:
        cursor = start
        batch = first
        last_read = last_sent = time.monotonic()
        try:
            yield f"retry: {int(POLL_SECONDS * 2000)}\n\n"
            while True:
                for event in batch:
                    cursor = event["id"]
                    yield _frame(event)
                if batch:
                    last_sent = time.monotonic()
                if len(batch) < READ_LIMIT:  # unless draining a backlog, read at a bounded rate
                    since = time.monotonic() - last_read
                    await asyncio.sleep(max(0.0, MIN_READ_SECONDS - since))
                wakeup.clear()  # a notification from here on makes the next wait return
                last_read = time.monotonic()
                batch, ended, complete = await run_in_threadpool(_read, db, study_id, cursor)
                if batch:
                    continue
                if complete and (ended or not follow):
                    return
                if await request.is_disconnected():
                    return
                await wakeup.wait(POLL_SECONDS if complete else MIN_READ_SECONDS)
                if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
        finally:
            wakeup.close()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
