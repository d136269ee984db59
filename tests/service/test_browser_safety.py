"""No web page can drive a local Caviar: a foreign Host name (DNS rebinding) is refused, a
change from another origin is refused whatever the auth mode, and no page may frame it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import COOKIE
from service.browsers import HostNames, host_name
from service.db import get_database
from service.models import Study

PROBLEM = "application/problem+json"
READER = "reader-secret-0123456789"
WRITER = "writer-secret-0123456789"
TOKENS = f"ann:read:{READER};bob:write:{WRITER}"
HERE = "http://testserver"


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
def client(sqlite_url: str, settings_for: Any) -> Any:
    """The default mode: no tokens (what `make run` starts)."""
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


def study_statuses(url: str) -> list[str]:
    with get_database(url).session(write=False) as s:
        return [study.status for study in s.query(Study).all()]


# -- Host ------------------------------------------------------------------------------------


def test_a_foreign_host_name_is_refused_as_dns_rebinding_needs_it(sqlite_url, settings_for) -> None:
    # The product's default: no configured names, not even the test client's.
    app = create_app(settings_for(sqlite_url, allowed_hosts="", migrate_on_start=False))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        for host in (
            "rebind.example:8000",
            "rebind.example",
            "testserver",
            "127.0.0.1.evil.example",
        ):
            r = c.get("/api/studies", headers={"host": host})
            assert r.status_code == 403, host
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.json()["type"] == "/problems/foreign-host"
            assert "CAVIAR_ALLOWED_HOSTS" in r.json()["detail"]
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000",
                     "caviar.localhost:8000", "127.0.0.2"):  # fmt: skip
            assert c.get("/api/studies", headers={"host": host}).status_code == 200, host


def test_configured_host_names_are_answered_and_star_answers_any(sqlite_url, settings_for) -> None:
    names = "caviar.example, *.corp.example"
    app = create_app(settings_for(sqlite_url, allowed_hosts=names, migrate_on_start=False))
    with TestClient(app) as c:
        for host, status in (
            ("caviar.example:8000", 200),
            ("CAVIAR.example.", 200),
            ("ml.corp.example", 200),
            ("corp.example", 403),
            ("caviar.example.evil.example", 403),
        ):
            assert c.get("/api/studies", headers={"host": host}).status_code == status, host
    app = create_app(settings_for(sqlite_url, allowed_hosts="*", migrate_on_start=False))
    with TestClient(app) as c:
        assert c.get("/api/studies", headers={"host": "anything.example"}).status_code == 200


def test_host_names_are_read_without_port_brackets_or_case() -> None:
    assert host_name("Example.ORG:8000") == "example.org"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("::1") == "::1"
    hosts = HostNames([])
    assert hosts.allows("[::1]:80") and hosts.allows("127.9.9.9") and not hosts.allows("[::2]")
    assert hosts.allows(None)  # HTTP/1.0 sends no Host: nothing to rebind


# -- Origin ----------------------------------------------------------------------------------


def test_a_page_of_another_origin_cannot_cancel_or_create_without_tokens(
    client, sqlite_url, spec_factory
) -> None:
    study_id = client.post("/api/studies", json=spec_factory()).json()["id"]
    # Another port of the same host, another loopback address, a sandboxed frame.
    for origin in ("http://testserver:8001", "http://127.0.0.2:8000", "null"):
        r = client.post(f"/api/studies/{study_id}/cancel", headers={"origin": origin})
        assert r.status_code == 403, origin
        assert r.json()["type"] == "/problems/cross-origin"
    # A plain form of another site: text/plain holding spec JSON, as the attack sent it.
    r = client.post(
        "/api/studies",
        content=json.dumps(spec_factory(name="planted")),
        headers={"content-type": "text/plain", "origin": "http://127.0.0.1:9999"},
    )
    assert r.status_code == 403
    # Without Origin, the Referer says where the page was.
    r = client.post(
        f"/api/studies/{study_id}/cancel", headers={"referer": "http://evil.example/page.html"}
    )
    assert r.status_code == 403
    assert study_statuses(sqlite_url) == ["queued"]  # nothing changed, nothing planted
    # The dashboard's own page, and a program (no Origin, no Referer), go through.
    r = client.post(f"/api/studies/{study_id}/cancel", headers={"origin": HERE})
    assert r.status_code == 200
    r = client.post("/api/studies", json=spec_factory(), headers={"referer": f"{HERE}/#/"})
    assert r.status_code == 201


def test_reads_from_another_origin_are_not_changes(client) -> None:
    # CORS (off here) decides what a page may read; a GET changes nothing.
    r = client.get("/api/studies", headers={"origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_a_foreign_origin_is_refused_with_a_token_too(sqlite_url, settings_for) -> None:
    app = create_app(settings_for(sqlite_url, tokens=TOKENS, migrate_on_start=False))
    with TestClient(app) as c:
        headers = {**bearer(WRITER), "origin": "http://evil.example"}
        r = c.post("/api/studies/1/cancel", headers=headers)
        assert r.status_code == 403 and r.json()["type"] == "/problems/cross-origin"
        assert c.post("/api/studies/1/cancel", headers=bearer(WRITER)).status_code == 404


def test_configured_cors_origins_may_still_make_changes(
    sqlite_url, settings_for, spec_factory
) -> None:
    settings = settings_for(
        sqlite_url, tokens=TOKENS, cors_origins="https://dash.example", migrate_on_start=False
    )
    with TestClient(create_app(settings)) as c:
        headers = {**bearer(WRITER), "origin": "https://dash.example"}
        r = c.post("/api/studies", json=spec_factory(), headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["access-control-allow-origin"] == "https://dash.example"
        other = {**bearer(WRITER), "origin": "https://other.example"}
        assert c.post("/api/studies", json=spec_factory(), headers=other).status_code == 403


def test_signing_out_from_another_site_is_refused(sqlite_url, settings_for) -> None:
    app = create_app(settings_for(sqlite_url, tokens=TOKENS, migrate_on_start=False))
    with TestClient(app, follow_redirects=False) as c:
        form = {"content-type": "application/x-www-form-urlencoded"}
        r = c.post("/login", content=f"token={WRITER}&next=/", headers={**form, "origin": HERE})
        assert r.status_code == 303
        r = c.post("/logout", headers={"origin": "https://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        assert c.get("/api/studies").status_code == 200  # still signed in
        r = c.post("/logout", headers={"origin": HERE})
        assert r.status_code == 303 and f'{COOKIE}=""' in r.headers["set-cookie"]


# -- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", ["", TOKENS], ids=["no-tokens", "tokens"])
def test_no_page_of_another_origin_may_frame_any_answer(sqlite_url, settings_for, tokens) -> None:
    app = create_app(settings_for(sqlite_url, tokens=tokens, migrate_on_start=False))
    with TestClient(app) as c:
        answers = [
            c.get("/"),
            c.get("/static/js/app.js"),
            c.get("/login"),
            c.get("/api/studies"),
            c.get("/api/studies/99"),
            c.get("/healthz"),
            c.get("/readyz"),
            c.post("/api/studies/1/cancel", headers={"origin": "http://evil.example"}),
            c.get("/", headers={"host": "evil.example"}),
        ]
    for r in answers:
        assert r.headers["content-security-policy"] == "frame-ancestors 'none'", r.url
        assert r.headers["x-frame-options"] == "DENY", r.url
