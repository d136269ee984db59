"""How the service runs under uvicorn: which proxies it believes, and a protocol that closes a
connection whose request headers do not arrive in time.

uvicorn has no timeout on reading a request: its keep-alive timer waits only between
requests and is cancelled by any byte received, so a client trickling a header a byte at
a time holds its connection for ever, and a thousand of them hold a thousand. The
protocol here gives every connection `header_timeout_seconds` from its opening, and from
each response, to have sent a whole request head; the body is the application's to read
(its size is capped there), and a request being answered is never cut.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from service.browsers import names
from service.settings import Settings

try:  # uvicorn's fast parser when installed (it is a dependency), as its "auto" picks
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
except ImportError:  # pragma: no cover
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HTTPProtocol  # type: ignore[assignment]


class HeaderDeadlineProtocol(_HTTPProtocol):
    """uvicorn's HTTP protocol, closing the connection when no request head has arrived
    `header_timeout` seconds after it opened or after its last response."""

    header_timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a whole head arrived: the request is being answered, its body read
        if not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class with this deadline (uvicorn takes a class, not an instance)."""
    return type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})


def server_config(app: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the service: quiet, the header deadline, and
    X-Forwarded-For/-Proto believed only from the proxies `forwarded_allow_ips` lists.

    uvicorn believes those headers from 127.0.0.1 by default: any local program could
    then pick the address its rate limit is counted under, a new one each request.
    """
    proxies = names(settings.forwarded_allow_ips)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=http_protocol(settings.header_timeout_seconds),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )
