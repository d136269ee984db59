"""Applies Alembic migrations programmatically: `caviar db upgrade`, service start, tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.db import get_database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (all migrations by default)."""
    cfg = alembic_config(url)
    db = get_database(url)
    # The write engine takes SQLite's lock up front: two processes migrating at once wait
    # for each other instead of failing half-way.
    with db.engine.execution_options(caviar_write=True).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    with get_database(url).engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def is_up_to_date(url: str) -> bool:
    return current_revision(url) == head_revision(url)
