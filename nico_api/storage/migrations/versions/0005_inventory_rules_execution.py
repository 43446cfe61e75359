"""Living tasks: each Site's racks and trays (Flow's inventory) and operation rules, and what a
task needs to be submitted, queued and run: its type, operation, targets, queue deadline, and
the simulated Flow's execution state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)


def TASK_COLUMNS() -> list[sa.Column]:  # noqa: N802 (fresh columns for every use)
    return [
        sa.Column("type", sa.String(length=32), nullable=True),
        sa.Column("information", sa.JSON(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("queue_expires_at", TIME, nullable=True),
        sa.Column("plan", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("due_at", TIME, nullable=True),
    ]


def _times() -> list[sa.Column]:
    return [sa.Column("created", TIME, nullable=False), sa.Column("updated", TIME, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "rack",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("failure", sa.String(), nullable=True),
        *_times(),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_rack_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rack")),
        sa.UniqueConstraint("site_id", "external_id", name=op.f("uq_rack_site_id_external_id")),
    )
    op.create_index(op.f("ix_rack_site_id"), "rack", ["site_id"])
    op.create_table(
        "tray",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("rack_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("bmc_mac", sa.String(length=17), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("failure", sa.String(), nullable=True),
        *_times(),
        sa.ForeignKeyConstraint(["rack_id"], ["rack.id"], name=op.f("fk_tray_rack_id_rack")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tray")),
    )
    op.create_index(op.f("ix_tray_rack_id"), "tray", ["rack_id"])
    op.create_index(op.f("ix_tray_external_id"), "tray", ["external_id"])
    op.create_index(op.f("ix_tray_bmc_mac"), "tray", ["bmc_mac"])
    op.create_table(
        "operation_rule",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        *_times(),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_operation_rule_site_id_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operation_rule")),
    )
    op.create_index(op.f("ix_operation_rule_site_id"), "operation_rule", ["site_id"])
    # Plain ALTER TABLE on both databases: SQLite keeps the task count triggers (0003).
    for column in TASK_COLUMNS():
        op.add_column("task", column)
    op.create_index("ix_task_due_at", "task", ["due_at"])
    op.create_index(
        "ix_task_status_rack_id_created_at", "task", ["status", "rack_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_task_status_rack_id_created_at", table_name="task")
    op.drop_index("ix_task_due_at", table_name="task")
    for column in reversed(TASK_COLUMNS()):
        op.drop_column("task", column.name)
    op.drop_index(op.f("ix_operation_rule_site_id"), table_name="operation_rule")
    op.drop_table("operation_rule")
    for index in ("ix_tray_bmc_mac", "ix_tray_external_id", "ix_tray_rack_id"):
        op.drop_index(op.f(index), table_name="tray")
    op.drop_table("tray")
    op.drop_index(op.f("ix_rack_site_id"), table_name="rack")
    op.drop_table("rack")
