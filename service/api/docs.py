"""The OpenAPI document: problem-details responses and bearer auth on every operation.

Errors share one shape (service.schemas.Problem, `application/problem+json`), so instead
of repeating the same six responses on each route, `install_openapi` adds the ones an
operation can produce from what it has: auth (401, 403), parameters (422), path ids
(404), a body (413), the database (503). Routes declare only their own (409, 429).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

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
