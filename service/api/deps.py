"""Dependencies shared by the routers: the database, the settings, the scope checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from service.auth import is_loopback
from service.db import Database
from service.errors import RateLimited
from service.metrics import SUBMISSIONS_REFUSED
from service.settings import Settings

# These dependencies are `async def` although they never await: FastAPI runs a plain `def`
# dependency on the thread pool, and a hop there costs more than the work itself (three
# hops per request were a tenth of a read's CPU in bench/api_load.py).


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


T = TypeVar("T")


async def run_read(read: Callable[..., T], /, *, db: Database, **kwargs: Any) -> T:
    """`read(db=db, **kwargs)`, a short database read, for an `async def` route.

    On SQLite it runs right here, on the event loop: the database is a local file, a WAL
    reader never waits for a writer, and the read is mostly Python holding the GIL, which
    would stall the loop just as long from a worker thread; the hop to the thread pool and
    back cost more CPU than the read itself (bench/api_load.py). Anywhere else the read
    waits on the network, so it goes to the thread pool like a sync route.
    """
    if db.dialect == "sqlite":
        return read(db=db, **kwargs)
    return await run_in_threadpool(read, db=db, **kwargs)


# Ids are 32-bit INTEGER columns: a larger number names nothing, and is refused as such
# before it reaches a database driver that would overflow on it.
MAX_ID = 2**31 - 1
StudyId = Annotated[int, Path(ge=1, le=MAX_ID, description="the study's id")]
TrialId = Annotated[int, Path(ge=1, le=MAX_ID, description="the trial's id")]

DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def require(scope: str) -> Any:
    """A dependency that admits requests holding `scope` (see service.auth)."""

    async def check(request: Request) -> None:
        request.state.token = request.app.state.auth.check(request, scope)

    return Depends(check)


ReadScope = require("read")
WriteScope = require("write")
WorkerScope = require("worker")


def caller_key(request: Request) -> str:
    """Whom a limit counts a request against (after a scope check has named the caller):
    its token; with no tokens configured, the address it came from, except that every
    loopback address is one caller, this machine's user (127.0.0.2, 127.0.0.3, ... would
    otherwise be a fresh bucket each)."""
    token = getattr(request.state, "token", None)
    if token is not None:
        return f"token:{token.name}"
    host = request.client.host if request.client else "-"
    return "addr:loopback" if is_loopback(host) else f"addr:{host}"


async def _submission(request: Request) -> None:
    """Spend one submission of the caller's rate (after WriteScope has named the caller)."""
    try:
        request.app.state.submissions.take(caller_key(request))
    except RateLimited:
        SUBMISSIONS_REFUSED.inc()
        raise


SubmitRate = Depends(_submission)
