"""Shared fixtures: databases built by the migrations, on SQLite and on PostgreSQL.

The migrations run once per session into a template (a SQLite file, a PostgreSQL
template database); each test gets a copy, which is the same database the migrations
build at a fraction of the cost. `test_migrations.py` runs them for real on empty ones.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# Under `make test` the suite runs in parallel processes (pytest-xdist) on a machine of
# few cores: one BLAS thread per process, and per service or worker process a test starts,
# or OpenBLAS's threads spin against each other (a trainer test went from 1 s to 2 min).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # in case a plugin loaded NumPy before this file

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


def _admin_engine():
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


def _database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def _postgres_database(admin, template: str | None = None) -> Iterator[str]:
    """A PostgreSQL database of its own (a copy of `template` if given), dropped afterwards."""
    name = f"caviar_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    url = _database_url(name)
    yield url
    forget_database(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_admin) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test's own, dropped afterwards."""
    yield from _postgres_database(postgres_admin)


@pytest.fixture(scope="session")
def postgres_template(postgres_admin) -> Iterator[str]:
    """A PostgreSQL database the migrations built once, for tests to copy."""
    databases = _postgres_database(postgres_admin)
    url = next(databases)
    migrate.upgrade(url)
    # CREATE DATABASE ... TEMPLATE needs the template to have no connection open.
    forget_database(url)
    yield make_url(url).database or ""
    next(databases, None)


@pytest.fixture
def migrated_postgres_url(postgres_admin, postgres_template: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own, as the migrations build it."""
    yield from _postgres_database(postgres_admin, template=postgres_template)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the migrations built once, for tests to copy."""
    path = tmp_path_factory.mktemp("template") / "caviar.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    forget_database(url)
    return path


@pytest.fixture
def migrated_sqlite_url(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """A SQLite database of this test's own, as the migrations build it."""
    path = tmp_path / "caviar.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    yield url
    forget_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind Caviar supports."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'caviar.db'}"
        yield url
        forget_database(url)
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str:
    """A database of each kind, built by the migrations (never create_all)."""
    return str(request.getfixturevalue(f"migrated_{request.param}_url"))


@pytest.fixture
def db(db_url: str) -> Database:
    return get_database(db_url)


@pytest.fixture
def sqlite_url(migrated_sqlite_url: str) -> str:
    return migrated_sqlite_url


@pytest.fixture
def settings_for():
    """Settings for a database URL, with fast leases for tests."""

    def make(url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": url,
            "lease_seconds": 5.0,
            "heartbeat_seconds": 0.5,
            "reap_interval_seconds": 0.5,
            "tokens": "",
            # Starlette's TestClient sends Host "testserver": a name this service answers
            # to in tests only (service/browsers.py), never by default.
            "allowed_hosts": "testserver",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


def small_spec(**overrides: object) -> dict[str, object]:
    """A spec that trains in a fraction of a second per trial."""
    spec: dict[str, object] = {
        "name": "tiny-moons",
        "dataset": {"name": "moons", "n_samples": 200, "noise": 0.2, "seed": 1},
        "model": {"hidden_layers": [8, 4], "optimizer": "adam", "epochs": 5, "batch_size": 32},
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"}},
        "strategy": {"type": "random", "trials": 4},
        "objective": {"metric": "dev_accuracy", "direction": "maximize", "at": "last"},
        "execution": {"mode": "caviar", "max_parallel": 8, "seed": 7},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def spec_factory():
    return small_spec


class LiveService:
    """A real uvicorn server on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings, extra_tokens: list[object] | None = None) -> None:
        import socket
        import threading
        import time

        import uvicorn

        from service.app import create_app

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.app = create_app(settings, extra_tokens=extra_tokens or [])  # type: ignore[arg-type]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test service did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_service(settings_for):
    """Start services for database URLs; all are stopped at the end of the test."""
    started: list[LiveService] = []

    def start(url: str, **overrides: object) -> LiveService:
        extra = overrides.pop("extra_tokens", None)
        svc = LiveService(settings_for(url, **overrides), extra)  # type: ignore[arg-type]
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


# Tiers, by folder: `pytest -m unit` is the fast inner loop; `-m "not browser"` and the
# others pick what a change needs. Every test is in exactly one tier.
TIERS = {"integration": "integration", "browser": "browser", "multihost": "multihost"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts
        tier = TIERS.get(parts[0], "unit") if len(parts) > 1 else "unit"
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "multihost":
            # `make test` runs the suite in parallel processes (pytest-xdist, --dist
            # loadgroup): the network namespaces' tests go to one of them, one at a time,
            # as two could pick the same free subnet at once.
            item.add_marker(pytest.mark.xdist_group("namespaces"))
