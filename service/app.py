"""The FastAPI application: routers, problem-details errors, the lease reaper, the dashboard."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import migrate
from service.api import dashboard as dashboard_routes
from service.api import events as events_routes
from service.api import studies as studies_routes
from service.api import worker as worker_routes
from service.auth import Authenticator, Token, parse_tokens
from service.db import get_database
from service.errors import CaviarError
from service.queue import reap_expired
from service.schemas import Health
from service.settings import Settings, get_settings

log = logging.getLogger("caviar.service")
STATIC = Path(__file__).parent / "static"

try:
    VERSION = version("caviar")
except PackageNotFoundError:  # running from a checkout that was not installed
    VERSION = "0.0.0"


def _finite(value: Any) -> Any:
    """Replace NaN and infinities by None, deep: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on a non-finite float: it becomes null."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            _finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


def problem(status: int, title: str, detail: str, slug: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem-details response."""
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    body.update(extra)
    return SafeJSONResponse(body, status_code=status, media_type="application/problem+json")


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CaviarError)
    async def _caviar(_: Request, exc: CaviarError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.slug, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": _dotted(e.get("loc", ())), "msg": e.get("msg", ""), "input": e.get("input")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return problem(422, "The request is invalid", detail, "invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem(exc.status_code, title, str(exc.detail), f"http-{exc.status_code}")

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return problem(
            503, "Database unavailable", "the database did not answer; retry shortly", "unavailable"
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return problem(
                503, "Database unavailable", "the connection was lost; retry shortly", "unavailable"
            )
        log.exception("database error")
        return problem(500, "Internal error", "an internal error occurred", "internal")

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")  # the trace stays in the log, never in the response
        return problem(500, "Internal error", "an internal error occurred", "internal")


class Reaper:
    """A thread that puts trials whose lease expired back in the queue."""

    def __init__(self, app: FastAPI, interval: float) -> None:
        self.app = app
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="caviar-reaper", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                moved = reap_expired(db=self.app.state.db)
                if moved:
                    log.info(
                        "reaper moved %d trials with expired leases",
                        moved,
                        extra={"action": "reap"},
                    )
            except Exception:  # the database may be briefly away; try again next tick
                log.warning("reaper pass failed", exc_info=True)


def create_app(settings: Settings | None = None, *, extra_tokens: list[Token] = ()) -> FastAPI:  # type: ignore[assignment]
    """Build the app for `settings` (the environment's by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            migrate.upgrade(settings.database_url)
        reaper = Reaper(app, settings.reap_interval_seconds)
        reaper.thread.start()
        try:
            yield
        finally:
            reaper.stop.set()
            reaper.thread.join(timeout=5)

    app = FastAPI(
        title="Caviar",
        version=VERSION,
        summary="Hyperparameter search for NumPy neural networks.",
        default_response_class=SafeJSONResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = get_database(settings.database_url)
    auth = Authenticator(parse_tokens(settings.tokens))
    for token in extra_tokens:
        auth.add(token)
    app.state.auth = auth
    install_error_handlers(app)
    app.include_router(studies_routes.router)
    app.include_router(events_routes.router)
    app.include_router(worker_routes.router)
    app.include_router(dashboard_routes.router)  # before the /static mount: it serves plotly.js

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> dict[str, str]:
        """Alive: answers as long as the process serves requests."""
        return {"status": "ok", "version": VERSION}

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
