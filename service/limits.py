"""Limits against abuse: a request-body cap enforced while streaming, a submission rate,
and a cap on the event streams held open.

The body cap is an ASGI middleware rather than a check in each route: it refuses a
declared `Content-Length` over the cap before the route runs, and counts the bytes of a
chunked body as they arrive, so no route ever holds more than the cap in memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import CaviarError, RateLimited

BodyCap = Callable[[Scope], int]


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the cap.

    It is an HTTPException so that FastAPI's own body parsing re-raises it untouched
    (it turns other exceptions into a 400), and the problem-details handler renders it.
    """

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is larger than this route accepts ({cap} bytes)")


class BodyLimitMiddleware:
    """413 for bodies over `cap(scope)` bytes: up front by Content-Length, else while read."""

    def __init__(self, app: ASGIApp, *, cap: BodyCap) -> None:
        self.app = app
        self.cap = cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope)
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            # Answer without reading a byte; the server drops the unread body.
            error = BodyTooLarge(cap)
            body = {
                "type": "/problems/payload-too-large",
                "title": "The request body is too large",
                "status": 413,
                "detail": f"{error.detail}; Content-Length says {declared}",
            }
            response = JSONResponse(body, status_code=413, media_type="application/problem+json")
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """Token buckets per key (a token's name, or a client address): `burst` at once,
    refilled at `per_minute`.

    In memory, per process: with several replicas each enforces its own bucket, so the
    effective rate is at most replicas x the setting. That is the accepted trade-off for
    not writing to the database on every submission.
    """

    MAX_KEYS = 10_000  # forget idle buckets beyond this many, so keys cannot exhaust memory

    def __init__(
        self, *, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one submission for `key`, or raise RateLimited with the wait in Retry-After."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) / self.rate)
                self._buckets[key] = (tokens, now)
                raise RateLimited(
                    f"at most {self.burst:g} submissions at once and {self.rate * 60:g} per "
                    f"minute; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1.0, now)

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled completely carries no information: drop those.
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.MAX_KEYS:  # every bucket is busy: drop the oldest
            oldest = min(self._buckets, key=lambda k: self._buckets[k][1])
            del self._buckets[oldest]


class TooManyStreams(CaviarError):
    """Too many event streams open for this caller; close one, or retry later."""

    status = 429
    slug = "too-many-streams"


class StreamsFull(CaviarError):
    """The service holds as many event streams as it serves; retry shortly."""

    status = 503
    slug = "streams-full"


STREAM_RETRY_SECONDS = 5  # a stream ends when its page closes: soon, if any does


class StreamSlots:
    """Event streams open at once, per caller and in all: each polls the database, and a
    thousand of them made every other request wait (2.6 s p95). `acquire` takes a slot or
    raises, with Retry-After; `release` gives it back when the stream ends."""

    def __init__(self, *, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._open: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def acquire(self, key: str) -> None:
        retry = {"Retry-After": str(STREAM_RETRY_SECONDS)}
        with self._lock:
            held = self._open.get(key, 0)
            if held >= self.per_client:
                raise TooManyStreams(
                    f"at most {self.per_client} event streams per caller are open at once; "
                    "close one (or follow the study by polling) and retry",
                    headers=retry,
                )
            if self._count >= self.total:
                raise StreamsFull(
                    f"the service holds its most event streams ({self.total}); retry in "
                    f"{STREAM_RETRY_SECONDS} s, or follow the study by polling",
                    headers=retry,
                )
            self._open[key] = held + 1
            self._count += 1

    def release(self, key: str) -> None:
        with self._lock:
            held = self._open.get(key, 0) - 1
            if held > 0:
                self._open[key] = held
            else:
                self._open.pop(key, None)
            self._count = max(0, self._count - 1)
