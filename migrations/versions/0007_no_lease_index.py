"""trials: no index on (status, lease_expires_at)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Its one reader, the reaper, finds the running trials through the indexes on status
(``ix_trials_status_study``; SQLite goes study by study through ``ix_trials_study_status``)
and reads their leases from the rows: running trials are at most the workers' leases,
however many trials the database holds. Every other write paid for it: each
heartbeat and each report moves a running trial's lease, so the index changed with
every one of them, and on PostgreSQL an update of an indexed column is never a heap-only
(HOT) update, so every heartbeat also wrote a new entry into each of the table's indexes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_trials_lease", table_name="trials")


def downgrade() -> None:
    op.create_index("ix_trials_lease", "trials", ["status", "lease_expires_at"], unique=False)
