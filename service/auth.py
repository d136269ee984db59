"""API tokens with scopes (read, write, worker); with none configured, loopback only."""

from __future__ import annotations

import hmac
import html
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Forbidden, Unauthorized

SCOPES = ("read", "write", "worker")


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]
    secret: str

    @property
    def granted(self) -> frozenset[str]:
        """What the token may do: write implies read (a submitter may look at what it
        submitted)."""
        return self.scopes | ({"read"} if "write" in self.scopes else set())


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


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine (TestClient's "testclient" is)."""
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
            if not is_loopback(client):
                raise Forbidden(
                    "no API tokens are configured, so this service answers only on loopback; "
                    "set CAVIAR_TOKENS to serve other hosts"
                )
            return None
        token = self.authenticate(credentials(request.headers, request.cookies)[0])
        if scope not in token.granted:
            raise Forbidden(f"this route needs the {scope!r} scope")
        return token


# Served to anyone: the liveness and readiness probes (an orchestrator's probe carries no
# token; they say only "alive" and "ready"), and the sign-in form that takes a token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/login", "/logout"})

# The dashboard signs in once and keeps its token in this cookie: HttpOnly (no script
# reads it), SameSite=Strict (no other site's page can make the browser send it), Secure
# on https. Bearer headers keep working for programs; a header wins over the cookie.
COOKIE = "caviar_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def credentials(headers: Any, cookies: dict[str, str]) -> tuple[str, bool]:
    """The `Authorization` value a request presents, and whether it came from the cookie."""
    header = headers.get("authorization", "")
    if header:
        return header, False
    secret = cookies.get(COOKIE, "")
    return (f"Bearer {secret}", True) if secret else ("", False)


def same_origin(headers: Any, scheme: str) -> bool:
    """Whether a request's Origin (or, lacking one, Referer) is this service itself."""
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return source is None
    parts = urlsplit(source)
    return parts.scheme == scheme and parts.netloc == headers.get("host", "")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this service, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(*, next_path: str, error: str | None = None, status: int = 401) -> HTMLResponse:
    """The sign-in form (self-contained: the dashboard's own files need a token)."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - Caviar</title>
<style>
body {{ margin: 0; min-height: 100vh; display: grid; place-items: center; background: #f5f6f9;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b2130; }}
form {{ background: #fff; border: 1px solid #e2e5ec; border-radius: 8px; padding: 28px 32px;
  width: 360px; box-shadow: 0 2px 12px rgba(20, 26, 39, .06); }}
h1 {{ font-size: 19px; margin: 0 0 6px; }}
p {{ margin: 0 0 16px; color: #687186; }}
label {{ display: block; font-weight: 600; margin-bottom: 6px; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: 8px 10px; font: inherit;
  border: 1px solid #c9cfdb; border-radius: 6px; margin-bottom: 16px; }}
button {{ background: #2456d6; color: #fff; border: 0; border-radius: 6px; padding: 8px 16px;
  font: inherit; font-weight: 600; cursor: pointer; }}
.error {{ color: #c2362b; }}
</style></head>
<body><form method="post" action="/login">
<h1>Caviar</h1>
<p>This service needs an API token. Ask its operator for one with the read scope
(write to submit and cancel from the dashboard).</p>
{message}
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button type="submit">Sign in</button>
</form>
<script>
// The server never sees the page's #fragment (the dashboard's route): keep it too.
const next = document.querySelector("input[name=next]");
if (location.hash && !next.value.includes("#")) next.value += location.hash;
</script>
</body></html>
"""
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def accepts_html(accept: str) -> bool:
    """Whether a request's Accept header is a browser's asking for a page."""
    return "text/html" in accept


def _wants_html(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    accept = headers.get(b"accept", b"").decode("latin-1")
    return scope.get("method") == "GET" and accepts_html(accept)


class AuthenticationMiddleware:
    """Once tokens are configured, a request without a valid one gets 401 here, before
    routing, body parsing or validation: an anonymous caller learns nothing about a route,
    not even whether its body would have been valid. That holds for every path but
    `PUBLIC_PATHS`: the API, its OpenAPI document and docs, the dashboard and its files.
    A browser asking for a page gets the sign-in form with the 401; a program gets a
    problem document. A request signed by the cookie that changes something must come
    from this service's own pages (Origin), on top of SameSite. Scopes (403) are checked
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
            or scope["path"] in PUBLIC_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        text = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
        authorization, by_cookie = credentials(text, cookie_parser(text.get("cookie", "")))
        try:
            self.auth.authenticate(authorization)
            if (
                by_cookie
                and scope.get("method") not in SAFE_METHODS
                and not same_origin(text, scope.get("scheme", "http"))
            ):
                raise Forbidden(
                    "a change signed by the dashboard's cookie must come from the dashboard; "
                    "programs send 'Authorization: Bearer <token>'"
                )
        except (Unauthorized, Forbidden) as exc:
            if isinstance(exc, Unauthorized) and _wants_html(scope, headers):
                path = scope["path"] + (
                    "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
                )
                page = login_page(next_path=path)
                await page(scope, receive, send)
                return
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
                headers={"www-authenticate": "Bearer"} if exc.status == 401 else None,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, _private(send))


def _private(send: Send) -> Send:
    """Mark what needed a token as for this browser only, checked again before reuse: no
    shared cache keeps it, and after signing out the pages are not shown from the cache."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.setdefault("headers", [])
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                message["headers"] = [*headers, (b"cache-control", b"private, no-cache")]
        await send(message)

    return sending
