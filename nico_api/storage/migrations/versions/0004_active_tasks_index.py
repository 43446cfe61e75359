"""Active tasks: a partial index for the lists' `activeOnly`, newest first.

Without it, a site whose few active tasks are old among many finished ones is read through
most of its index to fill a page of active tasks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Flow statuses listed as Pending or Running (frozen here: a migration must not follow the code).
ACTIVE = sa.text("status IN ('pending', 'waiting', 'running')")


def upgrade() -> None:
    op.create_index(
        "ix_task_active_site_id_created_at_id",
        "task",
        ["site_id", "created_at", "id"],
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_task_active_site_id_created_at_id", table_name="task")
