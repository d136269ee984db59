"""Shared fixtures: databases built by the migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service import migrate
from service.db import Database, forget_database, get_database
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "CAVIAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("CAVIAR_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where every service must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CAVIAR_REQUIRE_SERVICES=1: CI must run this test)")
    pytest.skip(reason)


def _admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[object]:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        engine.dispose()
        missing_service(f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(exc).__name__}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    name = f"caviar_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    forget_database(url)
    with postgres_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database of each kind Caviar supports."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'caviar.db'}"
        yield url
        forget_database(url)
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database of each kind, built by running the migrations (never create_all)."""
    migrate.upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def db(db_url: str) -> Database:
    return get_database(db_url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'caviar.db'}"
    migrate.upgrade(url)
    yield url
    forget_database(url)


@pytest.fixture
def settings_for():  # type: ignore[no-untyped-def]
    """Settings for a database URL, with fast leases for tests."""

    def make(url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": url,
            "lease_seconds": 5.0,
            "heartbeat_seconds": 0.5,
            "reap_interval_seconds": 0.5,
            "tokens": "",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make
