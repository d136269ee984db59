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


# A finished study's row, in the columns every revision has.
_STUDY = (
    "INSERT INTO studies (id, name, spec, status, strategy, mode, max_parallel,"
    " max_retries, metric, direction, total_rounds, current_round, spec_sha256)"
    " VALUES (:id, 's', '{}', 'completed', 'random', 'caviar', 8, 2,"
    " 'dev_accuracy', 'maximize', 1, 0, 'x')"
)


def test_upgrading_keeps_every_row(empty_db_url: str) -> None:
    """A migration that rebuilds a table (SQLite's batch mode) must not cascade deletes."""
    from sqlalchemy import text

    migrate.upgrade(empty_db_url, "0002")
    engine = get_database(empty_db_url).engine
    with engine.begin() as conn:
        conn.execute(text(_STUDY), {"id": 1})
        conn.execute(
            text(
                "INSERT INTO trials (id, study_id, number, round_index, params, config, status,"
                " attempt, retries, stop_requested, epochs_done)"
                " VALUES (1, 1, 0, 0, '{}', '{}', 'completed', 1, 0, false, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO metrics (trial_id, attempt, epoch, dev_accuracy) VALUES (1, 1, 1, 0.5)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events (study_id, type, data, created_at)"
                " VALUES (1, 'study.created', '{}', 0)"
            )
        )
    migrate.upgrade(empty_db_url)
    with engine.connect() as conn:
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("studies", "trials", "metrics", "events")
        }
        awaiting = conn.execute(text("SELECT awaiting_review FROM studies")).scalar()
    assert counts == {"studies": 1, "trials": 1, "metrics": 1, "events": 1}
    assert not awaiting


def test_a_deleted_trial_takes_its_metrics_and_no_other_trial_s(db_url: str) -> None:
    """Metrics have no foreign key (a per-row check cost a third of a row's insert); the
    trigger on trials does what its ON DELETE CASCADE did."""
    from sqlalchemy import text

    engine = get_database(db_url).engine
    with engine.begin() as conn:
        conn.execute(text(_STUDY), {"id": 901})
        for trial in (901, 902):
            conn.execute(
                text(
                    "INSERT INTO trials (id, study_id, number, round_index, params, config,"
                    " status, attempt, retries, stop_requested, epochs_done)"
                    " VALUES (:id, 901, :id, 0, '{}', '{}', 'completed', 1, 0, false, 2)"
                ),
                {"id": trial},
            )
            for epoch in (1, 2):
                conn.execute(
                    text("INSERT INTO metrics (trial_id, attempt, epoch) VALUES (:t, 1, :e)"),
                    {"t": trial, "e": epoch},
                )
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM trials WHERE id = 901"))
    with engine.connect() as conn:
        left = conn.execute(text("SELECT trial_id, epoch FROM metrics ORDER BY 1, 2")).all()
    assert [tuple(r) for r in left] == [(902, 1), (902, 2)]
