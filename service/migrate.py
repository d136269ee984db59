"""Applies Alembic migrations programmatically: `caviar db upgrade`, service start, tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from service.db import get_database

# Found through the imported package, so a wheel's copy serves as well as a checkout's.
MIGRATIONS = Path(migrations.__file__).resolve().parent
MIGRATION_LOCK = 0x0CA71A6  # PostgreSQL advisory lock key held while migrating


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (all migrations by default)."""
    _run(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str) -> None:
    """Take the database at `url` back to `revision` (for developers and tests)."""
    _run(url, lambda cfg: command.downgrade(cfg, revision))


def _run(url: str, step: Callable[[Config], None]) -> None:
    cfg = alembic_config(url)
    db = get_database(url)
    with db.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite alters most tables by copying them and dropping the old one; with
            # foreign keys on, that DROP deletes every row that references the table
            # (ON DELETE CASCADE), so a migration would empty trials and metrics. The
            # pragma only works outside a transaction, hence on the raw connection
            # before SQLAlchemy begins one.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            # The write option takes SQLite's lock up front: two processes migrating at
            # once wait for each other instead of failing half-way.
            conn = conn.execution_options(caviar_write=True)
            with conn.begin():
                if not sqlite:
                    # Replicas starting together on an empty database take turns instead
                    # of racing to create the same tables (SQLite's BEGIN IMMEDIATE
                    # already serializes them).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                cfg.attributes["connection"] = conn
                step(cfg)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration left dangling references: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def current_revision(url: str) -> str | None:
    with get_database(url).engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def is_up_to_date(url: str) -> bool:
    return current_revision(url) == head_revision(url)
