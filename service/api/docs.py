"""The API's documentation: the OpenAPI document, and /docs and /redoc served offline.

Errors share one shape (service.schemas.Problem, `application/problem+json`), so instead
of repeating the same six responses on each route, `install_openapi` adds the ones an
operation can produce from what it has: auth (401, 403), parameters (422), path ids
(404), a body (413), the database (503). Routes declare only their own (409, 429).

Swagger UI (/docs) and ReDoc (/redoc) load their scripts and styles from this service,
taken from the fastapi-offline package, never from a CDN (ReDoc without Google fonts),
as the dashboard's plotly.js is: the pages work with no internet.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from service.errors import NotFound
from service.schemas import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Need no token: liveness (touches no database) and readiness (for orchestrators' probes).
PUBLIC = frozenset({"/healthz", "/readyz"})

_DESCRIPTIONS = {
    401: "No valid token: send 'Authorization: Bearer <token>'",
    403: "The token lacks this route's scope, or no tokens are configured and the caller "
    "is not on loopback",
    404: "No such resource",
    409: "The resource is not in a state that allows this",
    413: "The request body is over the size cap",
    422: "Invalid input; `errors` lists each wrong field by its dotted path",
    429: "Too many submissions; see the Retry-After header",
    503: "The database did not answer; retry shortly",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Responses for `codes`, each a problem-details body, for a route's `responses=`."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS[code],
            "content": {"application/problem+json": {"schema": PROBLEM_REF}},
        }
        if code == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before the next submission",
                    "schema": {"type": "integer"},
                }
            }
        out[code] = entry
    return out


def _complete(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    codes = set()
    if path not in PUBLIC:
        codes |= {401, 403, 503}
        operation["security"] = [{"bearer": []}]
    params = operation.get("parameters", [])
    if params or "requestBody" in operation:
        codes.add(422)
    if any(p.get("in") == "path" for p in params):
        codes.add(404)
    if "requestBody" in operation:
        codes.add(413)
    if path.startswith("/api/worker/trials/"):
        codes.add(409)  # every lease route answers 409 once the worker's lease is lost
    for code, entry in problem_responses(*sorted(codes)).items():
        if str(code) == "422" or str(code) not in responses:
            # FastAPI's own 422 describes its validation format; ours is a problem.
            responses[str(code)] = entry


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, schema in schemas["Problem"].pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token from CAVIAR_TOKENS; needed once any is configured",
            }
        }
        for path, item in doc.get("paths", {}).items():
            for method, operation in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    _complete(path, operation)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


# -- /docs and /redoc, from packaged assets -------------------------------------------------

ASSETS_URL = "/static/vendor/docs"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}
FAVICON = "/static/favicon.svg"  # the dashboard's own

router = APIRouter(include_in_schema=False)


# ReDoc's menu ends with Redocly's attribution, whose logo it fetches from Redocly's CDN
# (and hides when that fails). Served without the URL, the image asks no other host for
# anything; the attribution's text and link stay.
_REWRITES = {"redoc.standalone.js": (b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"")}


@cache
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """An asset as is and gzipped, and its ETag: read and compressed once per process."""
    raw = (files("fastapi_offline") / "static" / name).read_bytes()
    if name in _REWRITES:
        raw = raw.replace(*_REWRITES[name])
    etag = f'"{hashlib.sha256(raw).hexdigest()[:32]}"'
    return raw, gzip.compress(raw, compresslevel=6, mtime=0), etag


@router.get(ASSETS_URL + "/{name}")
def get_docs_asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no documentation asset named {name!r}")
    raw, packed, etag = _asset(name)
    # The files change only with the installed package: the browser keeps them a day.
    headers = {"Cache-Control": "public, max-age=86400", "ETag": etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=ASSETS[name], headers=headers)
    return Response(raw, media_type=ASSETS[name], headers=headers)


@router.get("/docs")
def get_swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: every operation, to read and to try out."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{FAVICON}",
        # No badge from the public validator: the page asks nothing of other hosts.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def get_redoc(request: Request) -> HTMLResponse:
    """ReDoc: the API as one reference page."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} API - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{FAVICON}",
        with_google_fonts=False,
    )
