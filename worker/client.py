"""The worker's HTTP client for /api/worker/: retries with capped backoff and jitter."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import httpx

log = logging.getLogger("caviar.worker")

BACKOFF_FIRST_SECONDS = 0.2  # first wait after a failed request
BACKOFF_MAX_SECONDS = 10.0  # the wait doubles up to this cap, with full jitter
REQUEST_TIMEOUT_SECONDS = 30.0


class LeaseLostError(Exception):
    """The service refused a write with 409: another owner has the trial now."""


class ApiError(Exception):
    """The service refused the request for a reason retrying cannot fix."""


class Client:
    """Calls the service; transient failures (network, 5xx, 429) are retried until `stop`."""

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
        self._http = httpx.Client(
            base_url=api_url.rstrip("/"), headers=headers, timeout=REQUEST_TIMEOUT_SECONDS
        )
        self._stop = stop or threading.Event()
        self._max_wait = max_wait_seconds

    def close(self) -> None:
        self._http.close()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body`; returns the JSON answer, or raises LeaseLostError / ApiError."""
        response = self.request("POST", path, json=body)
        return response.json() if response.content else None

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
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 409:
                    raise LeaseLostError(_detail(response))
                if response.status_code < 400:
                    return response
                if response.status_code not in (429, 502, 503, 504) and response.status_code < 500:
                    raise ApiError(f"{path}: {response.status_code} {_detail(response)}")
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
