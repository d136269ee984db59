"""Probes: /healthz says the process is alive, /readyz that its database is there and migrated."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service import migrate
from service.app import create_app
from service.db import forget_database

TOKENS = "admin:read,write:admin-secret-0123456789;w:worker:worker-secret-0123456789"


def test_ready_once_migrated_to_head(db_url, settings_for) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings_for(db_url, migrate_on_start=False))
    r = TestClient(app).get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "revision": migrate.head_revision(db_url)}


def test_not_ready_before_the_migrations_while_still_alive(  # type: ignore[no-untyped-def]
    empty_db_url, settings_for
) -> None:
    app = create_app(settings_for(empty_db_url, migrate_on_start=False))
    c = TestClient(app)
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "revision None" in r.json()["detail"]
    assert c.get("/healthz").status_code == 200  # liveness never depends on the database
    migrate.upgrade(empty_db_url, "0001")  # part way: still behind the code
    assert c.get("/readyz").status_code == 503
    migrate.upgrade(empty_db_url)
    assert c.get("/readyz").status_code == 200


def test_not_ready_when_the_database_does_not_answer(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    try:
        c = TestClient(create_app(settings_for(url, migrate_on_start=False)))
        r = c.get("/readyz")
        assert r.status_code == 503
        assert "did not answer" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
    finally:
        forget_database(url)


def test_both_probes_need_no_token_and_are_documented_as_public(  # type: ignore[no-untyped-def]
    db_url, settings_for
) -> None:
    app = create_app(settings_for(db_url, tokens=TOKENS, migrate_on_start=False))
    c = TestClient(app, client=("10.0.0.9", 50000))  # not loopback: only tokens would let it in
    assert c.get("/api/studies").status_code == 401
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 200
    op = app.openapi()["paths"]["/readyz"]["get"]
    assert "security" not in op and "401" not in op["responses"]
    assert "503" in op["responses"]
