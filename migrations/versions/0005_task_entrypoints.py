"""a task's own function: the study's entrypoint, free metrics, what workers offer

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites no row. NULL is the built-in trainer's
    # study, a row of the built-in metrics only, a worker that offers no function.
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entrypoint", sa.String(length=200), nullable=True))
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra", sa.JSON(), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        # Workers registered before this ran the built-in trainer's trials only.
        batch_op.add_column(
            sa.Column("trainer", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("entrypoints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("entrypoints")
        batch_op.drop_column("trainer")
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_column("extra")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("entrypoint")
