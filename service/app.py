"""The FastAPI application: its routers, middleware and background threads, and the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service import migrate
from service.api import dashboard as dashboard_routes
from service.api import datasets as dataset_routes
from service.api import events as events_routes
from service.api import health as health_routes
from service.api import lessons as lessons_routes
from service.api import panda as panda_routes
from service.api import studies as studies_routes
from service.api import worker as worker_routes
from service.api.deps import DbDep, ReadScope
from service.api.docs import install_openapi
from service.api.docs import router as docs_router
from service.auth import (
    AuthenticationMiddleware,
    Authenticator,
    Token,
    accepts_html,
    parse_tokens,
)
from service.browsers import BrowserGuard, HostNames, names
from service.db import get_database
from service.limits import BodyLimitMiddleware, RateLimiter, StreamSlots
from service.metrics import CONTENT_TYPE, LatencyMiddleware, exposition
from service.problems import SafeJSONResponse, install_error_handlers
from service.queue import Reaper
from service.schemas import Health
from service.settings import Settings, get_settings
from service.studies.journal import Journal
from service.studies.rounds import Planner

STATIC = Path(__file__).parent / "static"

try:
    VERSION = version("caviar")
except PackageNotFoundError:  # running from a checkout that was not installed
    VERSION = "0.0.0"


# The dashboard's and the docs' routers come before the /static mount: they serve
# plotly.js and Swagger UI's and ReDoc's files.
ROUTERS = (
    studies_routes.router,
    events_routes.router,
    panda_routes.router,
    worker_routes.router,
    dataset_routes.router,
    lessons_routes.router,
    health_routes.router,
    dashboard_routes.router,
    docs_router,
)


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup and shutdown: migrations, the API's thread count, the reaper, the planner."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            migrate.upgrade(settings.database_url)
        # Sync routes run on anyio's thread pool (40 threads by default). Under the GIL,
        # 40 threads contending for it burn CPU on switching and queue on the database
        # pool; a handful keeps the CPU on requests (see bench/api_load.py).
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        reaper = Reaper(app.state.db, settings.reap_interval_seconds)
        reaper.start()
        # Opens coarse-to-fine rounds off the request path; the reaper's cadence is its
        # fallback scan (a finish in this process wakes it at once).
        planner = Planner(app.state.db, settings.reap_interval_seconds)
        planner.start()
        # The log says what happens to studies and trials, from the events table.
        journal = Journal(app.state.db)
        journal.start()
        try:
            yield
        finally:
            journal.close()
            planner.close()
            reaper.close()

    return lifespan


def create_app(settings: Settings | None = None, *, extra_tokens: list[Token] = ()) -> FastAPI:  # type: ignore[assignment]
    """Build the app for `settings` (the environment's by default)."""
    settings = settings or get_settings()

    app = FastAPI(
        title="Caviar",
        version=VERSION,
        summary="Hyperparameter search for NumPy neural networks.",
        default_response_class=SafeJSONResponse,
        lifespan=_lifespan(settings),
        # /docs and /redoc are docs_router's: the same pages, from packaged assets.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = get_database(settings.database_url)
    auth = Authenticator(parse_tokens(settings.tokens))
    for token in extra_tokens:
        auth.add(token)
    app.state.auth = auth
    app.state.submissions = RateLimiter(
        per_minute=settings.submit_rate_per_minute, burst=settings.submit_burst
    )
    app.state.streams = StreamSlots(
        per_client=settings.max_streams_per_client, total=settings.max_streams
    )
    install_error_handlers(app)
    install_openapi(app)
    _install_middleware(app, settings)
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Alive: answers as long as the process serves requests."""
        return {"status": "ok", "version": VERSION}

    @app.get(
        "/metrics",
        dependencies=[ReadScope],
        response_class=Response,
        tags=["health"],
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
    )
    def metrics(db: DbDep) -> Response:
        """Prometheus metrics: trials by status, queue depth, lease expiries, request latency."""
        return Response(exposition(db), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    # The dashboard's pages live after the `#` (/#/studies/1). Typed without it, a page's
    # address answers a browser with the page and a program with where to look instead.
    for page in ("/studies", "/studies/{ref}", "/trials/{ref}", "/workers"):
        app.add_api_route(page, _page_without_hash, methods=["GET"], include_in_schema=False)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _page_without_hash(request: Request) -> Response:
    path = request.url.path.rstrip("/")
    dashboard = "/#/" if path == "/studies" else f"/#{path}"
    if accepts_html(request.headers.get("accept", "")):
        return RedirectResponse(dashboard, status_code=307)
    raise HTTPException(
        404,
        f"no route GET {path}: the API answers at /api{path}, the dashboard shows it at "
        f"{dashboard}",
    )


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    """Body cap innermost, then authentication (a 401 is the first answer an anonymous caller
    gets, before a 413), then CORS (so errors carry CORS headers), then the browser guard
    (a foreign Host or origin is refused before anything else looks at the request, and
    every answer carries its headers), then latency outermost."""

    spec_routes = ("/api/studies", "/api/specs/validate", "/api/specs/preview")

    def body_cap(scope: Any) -> int:
        if scope.get("method") == "POST":
            if scope["path"] == "/api/datasets":
                return settings.max_dataset_bytes
            if scope["path"] in spec_routes:
                return settings.max_spec_bytes
        return settings.max_body_bytes

    app.add_middleware(BodyLimitMiddleware, cap=body_cap)
    app.add_middleware(AuthenticationMiddleware, authenticator=app.state.auth)
    origins = names(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "idempotency-key", "last-event-id"],
            expose_headers=["retry-after", "etag", "content-disposition"],
            max_age=600,
        )
    hosts = HostNames(names(settings.allowed_hosts))
    app.add_middleware(BrowserGuard, hosts=hosts, cors_origins=origins)
    app.add_middleware(LatencyMiddleware)
