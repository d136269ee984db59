"""Probes: /healthz says the process is alive, /readyz that its database is there and migrated."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service import migrate
from service.app import create_app
from service.db import forget_database

TOKENS = "admin:read,write:admin-secret-0123456789;w:worker:worker-secret-0123456789"


def test_ready_once_migrated_to_head(db_url, settings_for) -> None:
    app = create_app(settings_for(db_url, migrate_on_start=False))
    r = TestClient(app).get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "revision": migrate.head_revision(db_url)}


def test_not_ready_before_the_migrations_while_still_alive(empty_db_url, settings_for) -> None:
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


def test_not_ready_when_the_database_does_not_answer(settings_for, tmp_path: Path) -> None:
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


def test_both_probes_need_no_token_and_are_documented_as_public(db_url, settings_for) -> None:
    app = create_app(settings_for(db_url, tokens=TOKENS, migrate_on_start=False))
    c = TestClient(app, client=("10.0.0.9", 50000))  # not loopback: only tokens would let it in
    assert c.get("/api/studies").status_code == 401
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 200
    op = app.openapi()["paths"]["/readyz"]["get"]
    assert "security" not in op and "401" not in op["responses"]
    assert "503" in op["responses"]


# -- writes, and every 503 saying why with Retry-After -----------------------------------------


def test_not_ready_when_the_server_takes_no_writes(
    migrated_postgres_url, postgres_admin, settings_for
) -> None:
    """A read-only PostgreSQL (a standby, a database set read-only) answers every read."""
    app = create_app(settings_for(migrated_postgres_url, migrate_on_start=False))
    c = TestClient(app)
    assert c.get("/readyz").status_code == 200
    name = make_url(migrated_postgres_url).database
    with postgres_admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    forget_database(migrated_postgres_url)  # new connections take the database's setting
    app = create_app(settings_for(migrated_postgres_url, migrate_on_start=False))
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503
    assert r.json()["detail"] == "the database cannot take writes: it is read-only"
    assert r.headers["retry-after"] == "5"


def test_not_ready_when_a_sqlite_file_takes_no_writes(sqlite_url, settings_for) -> None:
    path = make_url(sqlite_url).database
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    try:
        r = TestClient(create_app(settings_for(read_only, migrate_on_start=False))).get("/readyz")
        assert r.status_code == 503
        assert r.json()["detail"] == "the database cannot take writes: it is read-only"
    finally:
        forget_database(read_only)


def test_not_ready_while_the_write_lock_stays_taken(sqlite_url, settings_for) -> None:
    """Answered within the probe's own wait (2 s), not the service's 30 s lock timeout."""
    app = create_app(settings_for(sqlite_url, migrate_on_start=False))
    c = TestClient(app)
    writer = sqlite3.connect(str(make_url(sqlite_url).database), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        began = time.monotonic()
        r = c.get("/readyz")
        assert time.monotonic() - began < 10
        assert r.status_code == 503 and "write lock" in r.json()["detail"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert c.get("/readyz").status_code == 200


def test_not_ready_when_the_disk_of_a_sqlite_file_is_full(sqlite_url, settings_for) -> None:
    """What a full disk looks like to the probe: less free than writes need."""
    settings = settings_for(sqlite_url, ready_min_free_bytes=2**62, migrate_on_start=False)
    r = TestClient(create_app(settings)).get("/readyz")
    assert r.status_code == 503
    assert "disk has" in r.json()["detail"] and "free" in r.json()["detail"]
    assert r.headers["retry-after"] == "5"


def test_every_503_says_why_and_when_to_come_back(settings_for) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    try:
        c = TestClient(create_app(settings_for(url, migrate_on_start=False)))
        for path in ("/readyz", "/api/studies", "/api/workers"):
            r = c.get(path)
            assert r.status_code == 503, path
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "database" in r.json()["detail"]
            assert int(r.headers["retry-after"]) > 0, path
    finally:
        forget_database(url)
