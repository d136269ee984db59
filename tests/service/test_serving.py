"""No single caller can stall the service or slip its limits: slow headers are cut, event
streams are capped, X-Forwarded-For is believed only from configured proxies, and `serve`
refuses to face the network with no tokens unless told."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli.local import Embedded, _free_port, _served_as
from service.settings import Settings

CAVIAR = [sys.executable, "-m", "service.cli"]
READERS = ["reader-one-0123456789", "reader-two-0123456789", "reader-three-0123456789"]
WRITER = "writer-secret-0123456789"
TOKENS = ";".join(f"r{i}:read:{s}" for i, s in enumerate(READERS)) + f";w:write:{WRITER}"


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
def embedded(settings_for: Any) -> Iterator[Any]:
    """`caviar serve`'s own server (uvicorn as the product configures it), no workers."""
    started: list[Embedded] = []

    def start(url: str, **overrides: object) -> Embedded:
        settings = settings_for(url, migrate_on_start=False, **overrides)
        server = Embedded(settings, host="127.0.0.1", port=_free_port(), workers=0)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- X-Forwarded-For -------------------------------------------------------------------------


def test_a_rotating_x_forwarded_for_gets_no_fresh_rate_limit(
    sqlite_url, embedded, spec_factory
) -> None:
    server = embedded(sqlite_url, submit_burst=2, submit_rate_per_minute=1)
    codes = [
        httpx.post(
            f"{server.url}/api/studies",
            json=spec_factory(),
            headers={"x-forwarded-for": f"127.0.0.{i}"},
        ).status_code
        for i in range(2, 6)
    ]
    assert codes == [201, 201, 429, 429]


def test_x_forwarded_for_is_believed_from_configured_proxies_only(sqlite_url, embedded) -> None:
    outside = {"x-forwarded-for": "203.0.113.9"}
    server = embedded(sqlite_url)
    assert httpx.get(f"{server.url}/api/studies", headers=outside).status_code == 200
    # Behind a proxy on this machine that says so, the caller is the one it names: not
    # on loopback, refused with no tokens configured.
    server = embedded(sqlite_url, forwarded_allow_ips="127.0.0.1")
    assert httpx.get(f"{server.url}/api/studies", headers=outside).status_code == 403


def test_every_loopback_address_is_one_caller_for_the_rate(
    sqlite_url, settings_for, spec_factory
) -> None:
    settings = settings_for(
        sqlite_url, submit_burst=2, submit_rate_per_minute=1, migrate_on_start=False
    )
    app = create_app(settings)
    codes = []
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        with TestClient(app, client=(address, 40000)) as c:
            codes.append(c.post("/api/studies", json=spec_factory()).status_code)
    assert codes == [201, 201, 429]


# -- slow headers ------------------------------------------------------------------------------


def test_the_header_deadline_cuts_a_trickle_never_an_answer(
    sqlite_url, embedded, spec_factory
) -> None:
    server = embedded(sqlite_url, header_timeout_seconds=0.5)
    port = int(server.url.rsplit(":", 1)[1])
    study_id = httpx.post(f"{server.url}/api/studies", json=spec_factory()).json()["id"]
    # An event stream opened first: an answer that lasts well past the deadline.
    stream = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"GET /api/studies/{study_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    stream.sendall(head.encode())
    received = stream.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(0.1)
        began = time.monotonic()
        closed = False
        while not closed and time.monotonic() - began < 5:
            try:
                sock.sendall(b"x")  # a byte at a time, never the end of the head
                closed = sock.recv(1024) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
        assert closed, "the connection was held"
        assert time.monotonic() - began < 3
    # Requests that send their head keep being answered, and the stream was never cut.
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    httpx.post(f"{server.url}/api/studies/{study_id}/cancel").raise_for_status()
    with stream:
        while b"study.cancelled" not in received:
            chunk = stream.recv(65536)
            assert chunk, "the stream was closed before its study's end"
            received += chunk


# -- event streams -----------------------------------------------------------------------------


class Stream:
    """An event stream held open, as an EventSource holds it."""

    def __init__(self, url: str, secret: str) -> None:
        self.client = httpx.Client(timeout=10, headers=bearer(secret))
        self.context = self.client.stream("GET", url)
        self.response = self.context.__enter__()
        self.status = self.response.status_code

    def close(self) -> None:
        self.context.__exit__(None, None, None)
        self.client.close()


def test_event_streams_are_capped_per_caller_and_in_all(
    sqlite_url, live_service, spec_factory
) -> None:
    svc = live_service(sqlite_url, tokens=TOKENS, max_streams_per_client=2, max_streams=3)
    study = httpx.post(f"{svc.url}/api/studies", json=spec_factory(), headers=bearer(WRITER))
    url = f"{svc.url}/api/studies/{study.json()['id']}/events"
    streams: list[Stream] = []
    try:
        for _ in range(3):
            streams.append(Stream(url, READERS[0]))
        assert [s.status for s in streams] == [200, 200, 429]
        refused = streams[2].response
        refused.read()
        assert refused.json()["type"] == "/problems/too-many-streams"
        assert int(refused.headers["retry-after"]) > 0
        streams.append(Stream(url, READERS[1]))  # another caller: the third in all
        streams.append(Stream(url, READERS[2]))  # the fourth: the service is full
        assert [s.status for s in streams[3:]] == [200, 503]
        full = streams[4].response
        full.read()
        assert full.json()["type"] == "/problems/streams-full"
        assert int(full.headers["retry-after"]) > 0
        # Closing a stream gives its slot back.
        streams[0].close()
        deadline = time.monotonic() + 10
        while True:
            again = Stream(url, READERS[2])
            streams.append(again)
            if again.status == 200:
                break
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.2)
        # Reads other than streams are not limited by them.
        assert httpx.get(f"{svc.url}/api/studies", headers=bearer(READERS[0])).status_code == 200
    finally:
        for s in streams[1:]:
            s.close()


# -- caviar serve: its start checks --------------------------------------------------------------


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAVIAR_")}
    return {**env, **{f"CAVIAR_{k.upper()}": v for k, v in settings.items()}}


def test_serve_beyond_loopback_with_no_tokens_refuses_to_start(sqlite_url) -> None:
    args = [*CAVIAR, "serve", "--host", "0.0.0.0", "--port", str(_free_port()), "--db", sqlite_url]
    proc = subprocess.Popen(args, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert "CAVIAR_TOKENS" in err and "--allow-no-tokens" in err and "Traceback" not in err


def _serve_until_healthy(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.1)


def test_serve_beyond_loopback_starts_when_told_or_with_tokens(sqlite_url) -> None:
    for tokens, flag, other_name in (("", ["--allow-no-tokens"], 403), (TOKENS, [], 401)):
        port = _free_port()
        args = [*CAVIAR, "serve", "--host", "0.0.0.0", "--port", str(port), "--db", sqlite_url]
        proc = _serve_until_healthy(args + flag, _env(tokens=tokens), port)
        try:
            # Under a name the network gives it: refused without tokens (DNS rebinding's
            # way in), answered with them (401: the name is fine, the token is missing).
            headers = {"host": "api-1:8000"}
            r = httpx.get(f"http://127.0.0.1:{port}/api/studies", headers=headers)
            assert r.status_code == other_name, tokens
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_the_host_served_as_joins_the_names_answered() -> None:
    tokens = "w:worker:worker-secret-0123456789"
    plain = Settings(database_url="sqlite://", tokens=tokens, allowed_hosts="")
    served = _served_as(plain, "192.0.2.10", allow_no_tokens=False)
    assert served.allowed_hosts == "192.0.2.10"
    assert _served_as(plain, "127.0.0.1", allow_no_tokens=False).allowed_hosts == ""
    # Every address: the names are not known here; with tokens, any (Jupyter's way)...
    assert _served_as(plain, "0.0.0.0", allow_no_tokens=False).allowed_hosts == "*"
    # ...unless the operator lists them.
    listed = plain.model_copy(update={"allowed_hosts": "caviar.example"})
    assert _served_as(listed, "::", allow_no_tokens=False).allowed_hosts == "caviar.example"
    untokened = plain.model_copy(update={"tokens": ""})
    assert _served_as(untokened, "0.0.0.0", allow_no_tokens=True).allowed_hosts == ""
