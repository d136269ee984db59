"""Readiness for orchestrators: `/readyz` answers 200 once the database is reachable, migrated
and takes writes.

`/healthz` (in service.app) says the process is alive and touches nothing; a liveness
probe must not fail when the database does, or the orchestrator would restart every
replica during a database outage. `/readyz` is the readiness probe: a replica that
cannot reach its database, finds it behind the code's migrations, or cannot write to it
(a full disk, a read-only file or server) is taken out of the load balancer's rotation
until it can serve again. Each 503 says which, and carries Retry-After.
"""

from __future__ import annotations

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.api.docs import problem_responses
from service.db import SQLITE_BUSY_TIMEOUT_MS, Database
from service.errors import Unavailable

router = APIRouter(tags=["health"])

RETRY_SECONDS = 5  # a probe comes back about this often anyway
# How long the write probe waits for the database's write lock: a probe must answer
# within its own timeout, and a lock held longer means writes are stalling.
PROBE_LOCK_MS = 2000
# What the database said, in words a probe may show anyone: the driver's message is not
# (it may name hosts, paths, statements).
_CAUSES = (
    (("disk is full", "no space left", "disk full"), "its disk is full"),
    (("readonly", "read-only", "read only"), "it is read-only"),
    (("locked", "lock timeout", "busy"), f"its write lock stayed taken over {PROBE_LOCK_MS} ms"),
)


class Readiness(BaseModel):
    status: Literal["ready"]
    revision: str | None


@lru_cache
def _head(url: str) -> str | None:
    # The migrations shipped with this code never change while it runs: read them once,
    # not on every probe.
    return migrate.head_revision(url)


def _not_ready(detail: str) -> Unavailable:
    return Unavailable(detail, headers={"Retry-After": str(RETRY_SECONDS)})


def _cause(exc: SQLAlchemyError) -> str:
    said = str(getattr(exc, "orig", None) or exc).lower()
    for words, cause in _CAUSES:
        if any(w in said for w in words):
            return cause
    return f"it refused a write ({type(exc).__name__})"


def probe_write(db: Database) -> None:
    """A write the database must accept, rolled back: it takes the write lock (waiting at
    most PROBE_LOCK_MS) and changes a row, so a read-only database or server refuses it."""
    with db.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        # SQLite's busy timeout belongs to the connection: shortened for the probe only.
        raw = conn.connection.driver_connection if sqlite else None
        if raw is not None:
            raw.execute(f"PRAGMA busy_timeout={PROBE_LOCK_MS}")
        try:
            with conn.execution_options(caviar_write=True).begin() as tx:
                if not sqlite:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{PROBE_LOCK_MS}ms'")
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
                tx.rollback()
        finally:
            if raw is not None:
                raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def current_revision(db: Database) -> str | None:
    """The database's migration, read straight from alembic_version: Alembic's own reader
    (a MigrationContext) logs two INFO lines each time, so every probe did."""
    with db.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if revision is None else str(revision)


def free_bytes(url: str) -> int | None:
    """Free space on the disk holding a SQLite file (None for a server, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    folder = Path(parsed.database).resolve().parent
    return shutil.disk_usage(folder).free if folder.exists() else None


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
def readyz(request: Request) -> dict[str, str | None]:
    """Ready: the database answers, is migrated, and takes writes.

    Migrated: to the revision this code expects. Takes writes: a write is rolled back,
    and with SQLite its disk has free space."""
    settings = request.app.state.settings
    url: str = settings.database_url
    try:
        current = current_revision(request.app.state.db)
    except SQLAlchemyError as exc:
        raise _not_ready(f"the database did not answer ({type(exc).__name__})") from exc
    head = _head(url)
    if current != head:
        raise _not_ready(f"the database is at revision {current}, this code needs {head}")
    free = free_bytes(url)
    if free is not None and free < settings.ready_min_free_bytes:
        raise _not_ready(
            f"the database's disk has {free // 1024} KiB free, under the "
            f"{settings.ready_min_free_bytes // 1024} KiB writes need (ready_min_free_bytes)"
        )
    try:
        probe_write(request.app.state.db)
    except SQLAlchemyError as exc:
        raise _not_ready(f"the database cannot take writes: {_cause(exc)}") from exc
    return {"status": "ready", "revision": current}
