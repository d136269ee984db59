"""Expensive requests (uploads, spec checks and submissions): threads of their own, and a rate.

The API's shared threads (`api_threads`) run heartbeats, claims and reads; parsing a 20 MB
upload or expanding a 10,000-trial spec there would make those wait. Expensive work runs
instead on a pool of its own (an anyio capacity limiter beside the shared one), so at
most that many such requests hold a thread at once and the others queue for it, not for
the shared threads. Validations and previews are also counted per caller, like
submissions (`SpecCheckRate`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import Depends, Request

from service.api.deps import caller_key
from service.errors import RateLimited
from service.limits import RateLimiter
from service.settings import Settings

T = TypeVar("T")

# Spec checks and submissions at once: each is a few hundred milliseconds of Python at
# worst, and two keep one core for everything else on a small machine.
SPEC_THREADS = 2


def _pool(request: Request, name: str, size: int) -> anyio.CapacityLimiter:
    # Made on first use, on the event loop (no await between the look-up and the store),
    # by the app whose loop it serves.
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, name, None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(size)
        setattr(request.app.state, name, limiter)
    return limiter


async def run_on_own_threads(
    request: Request, pool: str, size: int, work: Callable[..., T], /, **kwargs: Any
) -> T:
    """`work(**kwargs)` on the pool `pool` of `size` threads, never on the shared threads."""
    limiter = _pool(request, pool, size)
    return await anyio.to_thread.run_sync(functools.partial(work, **kwargs), limiter=limiter)


async def run_upload(request: Request, work: Callable[..., T], /, **kwargs: Any) -> T:
    settings: Settings = request.app.state.settings
    return await run_on_own_threads(
        request, "upload_threads", settings.upload_threads, work, **kwargs
    )


async def run_spec_work(request: Request, work: Callable[..., T], /, **kwargs: Any) -> T:
    return await run_on_own_threads(request, "spec_threads", SPEC_THREADS, work, **kwargs)


async def _spec_check(request: Request) -> None:
    """Spend one spec check of the caller's rate (after ReadScope has named the caller)."""
    limiter: RateLimiter | None = getattr(request.app.state, "spec_checks", None)
    if limiter is None:
        settings: Settings = request.app.state.settings
        limiter = RateLimiter(
            per_minute=settings.spec_check_rate_per_minute, burst=settings.spec_check_burst
        )
        request.app.state.spec_checks = limiter
    try:
        limiter.take(caller_key(request))
    except RateLimited as exc:  # the limiter speaks of submissions; these are checks
        detail = exc.detail.replace("submissions", "spec checks (validations and previews)")
        raise RateLimited(detail, headers=exc.headers) from None


SpecCheckRate = Depends(_spec_check)
