"""Errors as RFC 9457 problem details: every 4xx and 5xx answer of the API has this shape."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.render import json_bytes
from service.errors import CaviarError

log = logging.getLogger("caviar.service")

# An invalid input is echoed back only this long, and messages (which may quote their
# input) only so long: a 300 KB array in a request never comes back as a 300 KB error.
MAX_ECHO_CHARS = 200
MAX_MESSAGE_CHARS = 500
MAX_DETAIL_CHARS = 2000


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on a non-finite float: it becomes null."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _echo(value: Any) -> Any:
    """An input to show in an error: itself if small, else a truncated text of it."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _clip(value, MAX_ECHO_CHARS)
    try:
        text = json.dumps(value, default=str, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return value if len(text) <= MAX_ECHO_CHARS else _clip(text, MAX_ECHO_CHARS)


def _field_error(e: Any) -> Any:
    if not isinstance(e, dict):
        return e
    return {
        **e,
        "msg": _clip(str(e.get("msg", "")), MAX_MESSAGE_CHARS),
        "input": _echo(e.get("input")),
    }


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An RFC 9457 problem-details response."""
    body = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": _clip(detail, MAX_DETAIL_CHARS),
    }
    if isinstance(extra.get("errors"), list):
        extra["errors"] = [_field_error(e) for e in extra["errors"][:100]]
    body.update(extra)
    return SafeJSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


async def _caviar(_: Request, exc: CaviarError) -> JSONResponse:
    return problem(exc.status, exc.title, exc.detail, exc.slug, exc.headers, **exc.extra)


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            # A body that is not JSON at all has no field to name, only a byte offset.
            "loc": "body" if e.get("type") == "json_invalid" else _dotted(e.get("loc", ())),
            "msg": e.get("msg", ""),
            "input": e.get("input"),
        }
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return problem(422, "The request is invalid", detail, "invalid-request", errors=errors)


_PARAMETER = re.compile(r"\\\{[^/]+?\\\}")  # a path parameter, as re.escape writes it


def _allowed(request: Request) -> str | None:
    """Every method the API document gives the request's path, or None if it has none.

    Starlette's 405 names only the methods of the first route matching the path, but
    each method of a path is a route of its own here: GET and POST /api/studies.
    """
    paths = request.app.openapi().get("paths", {})
    methods = {
        method.upper()
        for template, item in paths.items()
        if re.fullmatch(_PARAMETER.sub("[^/]+", re.escape(template)), request.url.path)
        for method in item
    }
    return ", ".join(sorted(methods)) or None


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = {
        404: "Not found",
        405: "Method not allowed",
        413: "The request body is too large",
    }.get(exc.status_code, "HTTP error")
    if exc.status_code == 400:  # FastAPI could not decode the body (bytes, not UTF-8 JSON)
        errors = [{"loc": "body", "msg": "not valid UTF-8 JSON", "input": None}]
        return problem(
            422,
            "The request is invalid",
            "body: not valid UTF-8 JSON",
            "invalid-request",
            errors=errors,
        )
    slug = "payload-too-large" if exc.status_code == 413 else f"http-{exc.status_code}"
    headers = exc.headers
    if exc.status_code == 405 and (allowed := _allowed(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return problem(exc.status_code, title, str(exc.detail), slug, headers)


async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
    # A number too large for its column (SQLite's driver overflows, PostgreSQL says
    # "out of range"): the caller's input was invalid, not the service.
    return problem(
        422,
        "The request is invalid",
        "a number in the request is out of range for the database",
        "invalid-request",
    )


async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
    log.warning("database unavailable: %s", exc.orig)
    return problem(
        503, "Database unavailable", "the database did not answer; retry shortly", "unavailable"
    )


async def _db_error(_: Request, exc: DBAPIError) -> JSONResponse:
    if exc.connection_invalidated:
        return problem(
            503, "Database unavailable", "the connection was lost; retry shortly", "unavailable"
        )
    log.exception("database error")
    return problem(500, "Internal error", "an internal error occurred", "internal")


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")  # the trace stays in the log, never in the response
    return problem(500, "Internal error", "an internal error occurred", "internal")


def install_error_handlers(app: FastAPI) -> None:
    """Render every error `app` raises as problem details (the most specific type wins)."""
    handlers: list[tuple[type[Exception], Any]] = [
        (CaviarError, _caviar),
        (RequestValidationError, _validation),
        (StarletteHTTPException, _http),
        (OverflowError, _out_of_range),
        (DataError, _out_of_range),
        (OperationalError, _db_down),
        (DBAPIError, _db_error),
        (Exception, _unhandled),
    ]
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)
