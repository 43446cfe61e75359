"""Workflow runs: the last submission of each of a Site's workflow ids, so that identical orders
in flight together make one set of tasks whichever server process receives each.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_run",
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("task_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_workflow_run_site_id_site")
        ),
        sa.PrimaryKeyConstraint("site_id", "workflow_id", name=op.f("pk_workflow_run")),
    )


def downgrade() -> None:
    op.drop_table("workflow_run")
