"""What a web page may not make a browser do here: reach the service under a foreign Host
name, change anything from another origin, or frame its pages.

Browsers let any page send requests to any address, loopback included, and a page whose
DNS name is re-pointed at 127.0.0.1 (DNS rebinding) is even same-origin with it. So, as
Jupyter Server does, the service answers only to the Host names it is served as, and
refuses a change (any method but GET, HEAD, OPTIONS) whose Origin, or Referer lacking
one, is neither itself nor a configured CORS origin, whatever the auth mode: a token does
not make a cross-site form harmless when the browser holds the cookie. A program sends
neither header and is not concerned.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("caviar.service")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Every response: no page of another origin may frame this one (a framed dashboard is one
# click from a cancelled study). Both headers: old browsers know only the second.
FRAME_HEADERS = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]
# A 503 that names no wait gets this one: a client (or a probe) should come back soon.
RETRY_AFTER_SECONDS = 5


def names(text: str) -> list[str]:
    """A comma-separated setting as a list of its non-empty entries."""
    return [part.strip() for part in text.split(",") if part.strip()]


def host_name(host: str) -> str:
    """A Host header's name: lower case, without its port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal, "[::1]:8000"
        return host[1 : host.find("]")] if "]" in host else host
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """localhost, a name under .localhost (RFC 6761: always loopback), or a loopback IP."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostNames:
    """The Host names the service answers to: loopback's, and those configured (exact
    names, `*.example.org` for subdomains, `*` for any)."""

    def __init__(self, configured: Iterable[str]) -> None:
        entries = {host_name(entry) for entry in configured}
        self.any = "*" in entries
        self.exact = {e for e in entries if not e.startswith("*")}
        self.suffixes = tuple(e[1:] for e in entries if e.startswith("*."))

    def allows(self, host: str | None) -> bool:
        if self.any or host is None:  # HTTP/1.0 sends no Host: nothing to rebind
            return True
        name = host_name(host)
        return is_loopback_name(name) or name in self.exact or name.endswith(self.suffixes)


def _origin(value: str) -> str:
    parts = urlsplit(value.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class BrowserGuard:
    """403 for a foreign Host, or a change from a foreign origin; frame headers on every
    response; Retry-After on every 503 that names none."""

    def __init__(self, app: ASGIApp, *, hosts: HostNames, cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = frozenset(_origin(o) for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _guarded(send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host")
        refusal = None
        if not self.hosts.allows(host):
            refusal = (
                "foreign-host",
                "The Host is not a name of this service",
                f"this service is not served as {host_name(host or '')!r}: it answers to "
                "loopback names and those CAVIAR_ALLOWED_HOSTS lists (a page that reached it "
                "under another name may be DNS rebinding)",
            )
        elif scope["method"] not in SAFE_METHODS and self.foreign(headers, host or ""):
            refusal = (
                "cross-origin",
                "A change from another site's page",
                "this service takes changes from its own pages (the dashboard) and from "
                "programs, not from another site's page; a browser app elsewhere needs its "
                "origin in CAVIAR_CORS_ORIGINS",
            )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        slug, title, detail = refusal
        source = headers.get("origin") or headers.get("referer") or "-"
        log.warning(
            "refused %s %s: %s (Host %.100r, from %.100r)",
            scope["method"],
            scope["path"],
            slug,
            host,
            source,
        )
        body = {"type": f"/problems/{slug}", "title": title, "status": 403, "detail": detail}
        response = JSONResponse(body, status_code=403, media_type="application/problem+json")
        await response(scope, receive, send)

    def foreign(self, headers: dict[str, str], host: str) -> bool:
        """Whether the page that sent this (Origin, else Referer) is another site's."""
        source = headers.get("origin")
        if source is None:
            source = headers.get("referer")
            if source is None:
                return False  # a program, or a browser that says nothing: not a page's form
        if source.strip() == "null":  # a sandboxed frame, a file: nobody's own page
            return True
        origin = _origin(source)
        return origin.split("://", 1)[1] != host.lower() and origin not in self.cors_origins


def _guarded(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {k.lower() for k, _ in headers}
            headers += [(k, v) for k, v in FRAME_HEADERS if k not in present]
            if message["status"] == 503 and b"retry-after" not in present:
                headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending
