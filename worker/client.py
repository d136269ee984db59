"""The worker's HTTP client for /api/worker/: retries with capped backoff and jitter."""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from functools import cache
from typing import Any

import httpx
import orjson

log = logging.getLogger("caviar.worker")

BACKOFF_FIRST_SECONDS = 0.2  # first wait after a failed request
BACKOFF_MAX_SECONDS = 10.0  # the wait doubles up to this cap, with full jitter
REQUEST_TIMEOUT_SECONDS = 30.0


@cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS settings (its CA bundle, SSL_CERT_FILE and SSL_CERT_DIR), made
    once per process: a worker holds four clients, and each made its own (about 50 ms of
    CPU each, at every worker process's start)."""
    return httpx.create_ssl_context()


class LeaseLostError(Exception):
    """The service refused a write with 409: another owner has the trial now."""


class ApiError(Exception):
    """The service refused the request for a reason retrying cannot fix (`status`, if it
    answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def parse_urls(api_url: str) -> list[str]:
    """The service's URLs from `http://a:8000` or a comma-separated `http://a:8000,http://b:8000`.

    Raises ValueError on an empty list or entry, or an entry that is not an http(s) URL.
    """
    urls = [u.strip().rstrip("/") for u in api_url.split(",")]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r} (in {api_url!r})")
    return urls


class Client:
    """Calls the service; transient failures (network, 5xx, 429) are retried until `stop`.

    `api_url` may list several replicas of the service, comma-separated: a request that
    cannot reach one (the connection is refused, reset or times out) is retried on the
    next, and the client stays there while it answers. Every worker write is safe to
    send twice (lease tokens and compare-and-set), so a request whose answer was lost on
    one replica may be sent again to another.
    """

    def __init__(
        self,
        api_url: str,
        token: str | None = None,
        *,
        stop: threading.Event | None = None,
        max_wait_seconds: float | None = None,
    ) -> None:
        headers = {"user-agent": "caviar-worker"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.urls = parse_urls(api_url)
        self._current = 0
        self._http = httpx.Client(
            base_url=self.urls[0],
            headers=headers,
            timeout=REQUEST_TIMEOUT_SECONDS,
            verify=_tls_context(),
        )
        self._stop = stop or threading.Event()
        self._max_wait = max_wait_seconds

    @property
    def url(self) -> str:
        """The replica requests go to now."""
        return self.urls[self._current]

    def close(self) -> None:
        self._http.close()

    def _next_replica(self) -> None:
        if len(self.urls) > 1:
            self._current = (self._current + 1) % len(self.urls)
            self._http.base_url = httpx.URL(self.url)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` as JSON; returns the JSON answer, or raises LeaseLostError / ApiError.

        orjson, not httpx's json: a claim carries every epoch of its finished trials, and
        it writes a number that is not finite as null, as the service stores it.
        """
        response = self.request(
            "POST", path, content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
        return orjson.loads(response.content) if response.content else None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on transient failures; a 2xx or 3xx response, or an error.

        Gives up on transient failures only when `stop` is set or `max_wait_seconds` has
        passed, raising the last error.
        """
        delay = BACKOFF_FIRST_SECONDS
        started = time.monotonic()
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc} ({self.url})"
                self._next_replica()
            else:
                if response.status_code == 409:
                    raise LeaseLostError(_detail(response))
                if response.status_code < 400:
                    return response
                if response.status_code not in (429, 502, 503, 504) and response.status_code < 500:
                    raise ApiError(
                        f"{path}: {response.status_code} {_detail(response)}",
                        response.status_code,
                    )
                problem = f"{response.status_code} {_detail(response)}"
            waited = time.monotonic() - started
            if self._stop.is_set() or (self._max_wait is not None and waited > self._max_wait):
                raise ApiError(f"{path}: gave up after {waited:.1f}s: {problem}")
            sleep = random.uniform(0, delay)  # full jitter: many workers do not retry in step
            log.warning("%s failed (%s); retrying in %.2fs", path, problem, sleep)
            self._stop.wait(sleep)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)
    return str(body)[:200]
