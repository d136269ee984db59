"""API tokens with scopes (read, write, worker); with none configured, loopback only."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import Request

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

    def check(self, request: Request, scope: str) -> Token | None:
        if not self.tokens:
            client = request.client.host if request.client else None
            if not _is_loopback(client):
                raise Forbidden(
                    "no API tokens are configured, so this service answers only on loopback; "
                    "set CAVIAR_TOKENS to serve other hosts"
                )
            return None
        header = request.headers.get("authorization", "")
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret:
            raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), secret.strip().encode()):
                # write implies read: a submitter may look at what it submitted
                granted = token.scopes | ({"read"} if "write" in token.scopes else set())
                if scope not in granted:
                    raise Forbidden(f"this route needs the {scope!r} scope")
                return token
        raise Unauthorized("the token is not valid")
