"""metrics keyed by (trial, attempt, epoch), no per-row foreign key check

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Every epoch of every trial is a metrics row, so what the database does per row bounds how
fast small trials can be stored. Two things it did are gone:
- the foreign key on ``trial_id``: PostgreSQL checked it with a trigger on every inserted
  row (about 8 of the 24 µs a row cost its server). Nothing is lost by it: rows are only
  written by a report that holds its trial's row, and a trigger on ``trials`` deletes a
  trial's metrics with it, as the key's ON DELETE CASCADE did;
- the surrogate ``id``: (trial_id, attempt, epoch) was already unique and is how every
  read finds the rows, so it becomes the primary key and one index per row goes (on
  SQLite, a table without rowids).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FIELDS = ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "learning_rate", "seconds")
_COLUMNS = ("trial_id", "attempt", "epoch", *_FIELDS, "extra")

# A deleted trial's metrics go with it (what the foreign key's ON DELETE CASCADE did).
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION caviar_delete_trial_metrics() RETURNS trigger AS $$
BEGIN
    DELETE FROM metrics USING gone WHERE metrics.trial_id = gone.id;
    RETURN NULL;
END $$ LANGUAGE plpgsql
"""
_PG_TRIGGER = (
    "CREATE TRIGGER trials_delete_metrics AFTER DELETE ON trials"
    " REFERENCING OLD TABLE AS gone FOR EACH STATEMENT"
    " EXECUTE FUNCTION caviar_delete_trial_metrics()"
)
_SQLITE_TRIGGER = (
    "CREATE TRIGGER trials_delete_metrics AFTER DELETE ON trials"
    " BEGIN DELETE FROM metrics WHERE trial_id = OLD.id; END"
)


def _create_metrics(name: str, *, keyed: bool, suffix: str) -> None:
    """The metrics table in one of its shapes, its constraints' names ending in `suffix`."""
    columns: list[sa.Column] = []
    constraints: list[sa.Constraint] = []
    if keyed:
        columns += [
            sa.Column("trial_id", sa.Integer(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
        ]
        constraints.append(
            sa.PrimaryKeyConstraint("trial_id", "attempt", "epoch", name="pk_metrics" + suffix)
        )
    else:
        columns += [
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("trial_id", sa.Integer(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("epoch", sa.Integer(), nullable=False),
        ]
        constraints += [
            sa.ForeignKeyConstraint(
                ["trial_id"],
                ["trials.id"],
                name="fk_metrics_trial_id_trials" + suffix,
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name="pk_metrics" + suffix),
            sa.UniqueConstraint(
                "trial_id", "attempt", "epoch", name="uq_metrics_trial_id_attempt_epoch" + suffix
            ),
        ]
    columns += [sa.Column(f, sa.Float(), nullable=True) for f in _FIELDS]
    columns.append(sa.Column("extra", sa.JSON(), nullable=True))
    kwargs = {"sqlite_with_rowid": False} if keyed else {}
    op.create_table(name, *columns, *constraints, **kwargs)


def _rebuild(*, keyed: bool) -> None:
    """The metrics table made again in its other shape, every row copied in key order."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    # PostgreSQL's constraint names are indexes' names, one namespace for the schema: the
    # new table's take a suffix while the old one still has theirs.
    suffix = "_new" if postgres else ""
    _create_metrics("metrics_new", keyed=keyed, suffix=suffix)
    cols = ", ".join(_COLUMNS)
    op.execute(
        f"INSERT INTO metrics_new ({cols}) SELECT {cols} FROM metrics"
        " ORDER BY trial_id, attempt, epoch"
    )
    op.drop_table("metrics")
    op.rename_table("metrics_new", "metrics")
    if postgres:
        # Give the constraints and the sequence the names a table made as "metrics" has.
        names = ["pk_metrics"]
        if not keyed:
            names += ["fk_metrics_trial_id_trials", "uq_metrics_trial_id_attempt_epoch"]
            op.execute("ALTER SEQUENCE metrics_new_id_seq RENAME TO metrics_id_seq")
        for name in names:
            op.execute(f"ALTER TABLE metrics RENAME CONSTRAINT {name}_new TO {name}")


def upgrade() -> None:
    bind = op.get_bind()
    _rebuild(keyed=True)
    if bind.dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS trials_delete_metrics ON trials")
        op.execute("DROP FUNCTION IF EXISTS caviar_delete_trial_metrics()")
    else:
        op.execute("DROP TRIGGER IF EXISTS trials_delete_metrics")
    _rebuild(keyed=False)
