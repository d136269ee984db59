"""Polling helpers shared by the integration tests (no timing assertions: only timeouts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, what: str | Callable[[], str] = ""
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds,
    saying `what` was awaited (a callable: what it says then, such as the state reached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {said or predicate}")
