"""Task lists: the components a task targets, and indexes for paging newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_component",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("component_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_task_component_task_id_task")
        ),
        sa.PrimaryKeyConstraint("task_id", "component_id", name=op.f("pk_task_component")),
    )
    op.create_index(op.f("ix_task_component_component_id"), "task_component", ["component_id"])
    op.create_index("ix_task_site_id_created_at_id", "task", ["site_id", "created_at", "id"])
    op.create_index("ix_task_rack_id_created_at_id", "task", ["rack_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_rack_id_created_at_id", table_name="task")
    op.drop_index("ix_task_site_id_created_at_id", table_name="task")
    op.drop_index(op.f("ix_task_component_component_id"), table_name="task_component")
    op.drop_table("task_component")
