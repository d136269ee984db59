"""Waking event streams on PostgreSQL: one thread per process and database LISTENs.

The thread LISTENs on service.events.CHANNEL and wakes the streams waiting on the study
each notification names, so a stream hears of an event any replica commits at once.
Streams still poll (see service/events/stream.py): the listener's connection may drop,
and SQLite has no notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref

import psycopg
from sqlalchemy.engine import make_url

from service.db import Database
from service.events.write import CHANNEL

log = logging.getLogger("caviar.service")

RECONNECT_SECONDS = 2.0  # between attempts of the listener to reach the database


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
