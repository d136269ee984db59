"""API tokens with scopes (read, write, worker); with none configured, loopback only."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Forbidden, Unauthorized

SCOPES = ("read", "write", "worker")


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    secret: str


def parse_tokens(text: str) -> list[Token]:
    """Parse `name:scope1,scope2:secret` entries separated by `;`.

    Raises ValueError naming the bad entry (without echoing the secret).
    """
    tokens = []
    for i, entry in enumerate(e.strip() for e in text.split(";")):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[0] or len(parts[2]) < 16:
            raise ValueError(
                f"CAVIAR_TOKENS entry {i}: expected name:scopes:secret with a secret of at "
                "least 16 characters"
            )
        scopes = frozenset(s.strip() for s in parts[1].split(",") if s.strip())
        unknown = scopes - set(SCOPES)
        if not scopes or unknown:
            raise ValueError(
                f"CAVIAR_TOKENS entry {i} ({parts[0]}): scopes must be among {', '.join(SCOPES)}"
                f" (got {', '.join(sorted(scopes)) or 'none'})"
            )
        tokens.append(Token(parts[0], scopes, parts[2]))
    return tokens


def _is_loopback(host: str | None) -> bool:
    if host in ("testclient", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class Authenticator:
    """Checks a request's bearer token against the configured tokens and a route's scope."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = list(tokens)

    def add(self, token: Token) -> None:
        self.tokens.append(token)

    def authenticate(self, authorization: str) -> Token:
        """The token an `Authorization` header presents, or Unauthorized."""
        kind, _, secret = authorization.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
        presented = secret.strip().encode()
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), presented):
                return token
        raise Unauthorized("the token is not valid")

    def check(self, request: Request, scope: str) -> Token | None:
        if not self.tokens:
            client = request.client.host if request.client else None
            if not _is_loopback(client):
                raise Forbidden(
                    "no API tokens are configured, so this service answers only on loopback; "
                    "set CAVIAR_TOKENS to serve other hosts"
                )
            return None
        token = self.authenticate(request.headers.get("authorization", ""))
        # write implies read: a submitter may look at what it submitted
        granted = token.scopes | ({"read"} if "write" in token.scopes else set())
        if scope not in granted:
            raise Forbidden(f"this route needs the {scope!r} scope")
        return token


# Served to anyone: the liveness and readiness probes, and the API's own description.
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc")
GUARDED_PREFIXES = ("/api/", "/metrics")


class AuthenticationMiddleware:
    """Once tokens are configured, a request to the API without a valid one gets 401 here,
    before routing, body parsing or validation: an anonymous caller learns nothing about
    a route, not even whether its body would have been valid. Scopes (403) are checked
    per route by the dependencies in service.api.deps.
    """

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.auth.tokens
            or scope.get("method") == "OPTIONS"  # CORS preflights carry no credentials
            or not scope["path"].startswith(GUARDED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        try:
            self.auth.authenticate(headers.get(b"authorization", b"").decode("latin-1"))
        except Unauthorized as exc:
            body = {
                "type": f"/problems/{exc.slug}",
                "title": exc.title,
                "status": exc.status,
                "detail": exc.detail,
            }
            response = JSONResponse(
                body,
                status_code=exc.status,
                media_type="application/problem+json",
                headers={"www-authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
