"""Readiness for orchestrators: `/readyz` answers 200 once the database is reachable and migrated.

`/healthz` (in service.app) says the process is alive and touches nothing; a liveness
probe must not fail when the database does, or the orchestrator would restart every
replica during a database outage. `/readyz` is the readiness probe: a replica that
cannot reach its database, or finds it behind the code's migrations, is taken out of the
load balancer's rotation until it can serve again.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.api.docs import problem_responses
from service.errors import Unavailable

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: Literal["ready"]
    revision: str | None


@lru_cache
def _head(url: str) -> str | None:
    # The migrations shipped with this code never change while it runs: read them once,
    # not on every probe.
    return migrate.head_revision(url)


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
def readyz(request: Request) -> dict[str, str | None]:
    """Ready: the database answers and is migrated to the revision this code expects."""
    url: str = request.app.state.settings.database_url
    try:
        current = migrate.current_revision(url)
    except SQLAlchemyError as exc:
        raise Unavailable(f"the database did not answer: {type(exc).__name__}") from exc
    head = _head(url)
    if current != head:
        raise Unavailable(f"the database is at revision {current}, this code needs {head}")
    return {"status": "ready", "revision": current}
