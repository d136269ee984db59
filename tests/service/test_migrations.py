"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service import migrate
from service.db import get_database
from service.models import Base


def test_migrations_match_the_models(db_url: str) -> None:
    engine = get_database(db_url).engine
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"the models and the migrations differ: {diff}"


def test_upgrade_is_idempotent_and_reaches_head(db_url: str) -> None:
    migrate.upgrade(db_url)  # a second time changes nothing
    assert migrate.is_up_to_date(db_url)
    tables = set(inspect(get_database(db_url).engine).get_table_names())
    assert {"studies", "rounds", "trials", "metrics", "datasets", "workers"} <= tables


def test_downgrade_to_base_and_back(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    from alembic import command

    cfg = migrate.alembic_config(empty_db_url)
    with get_database(empty_db_url).engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.current_revision(empty_db_url) is None
    migrate.upgrade(empty_db_url)
    assert migrate.is_up_to_date(empty_db_url)
