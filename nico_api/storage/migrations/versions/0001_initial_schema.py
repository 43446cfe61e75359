"""Initial schema: providers, sites, tasks and users.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
# Flow's report document: jsonb on PostgreSQL, JSON text elsewhere.
ReportDocument = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def upgrade() -> None:
    op.create_table(
        "infrastructure_provider",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_infrastructure_provider")),
        sa.UniqueConstraint("org", name=op.f("uq_infrastructure_provider_org")),
    )
    op.create_table(
        "site",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("infrastructure_provider_id", sa.Uuid(), nullable=False),
        sa.Column("flow_enabled", sa.Boolean(), nullable=False),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["infrastructure_provider_id"],
            ["infrastructure_provider.id"],
            name=op.f("fk_site_infrastructure_provider_id_infrastructure_provider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
    )
    op.create_index(
        op.f("ix_site_infrastructure_provider_id"), "site", ["infrastructure_provider_id"]
    )
    op.create_table(
        "task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("rack_id", sa.Uuid(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("applied_rule_id", sa.Uuid(), nullable=True),
        sa.Column("report", ReportDocument, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_task_site_id_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
    )
    op.create_index(op.f("ix_task_site_id"), "task", ["site_id"])
    op.create_table(
        "user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("first_name", sa.String(), nullable=True),
        sa.Column("last_name", sa.String(), nullable=True),
        sa.Column("created", Timestamp, nullable=False),
        sa.Column("updated", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user")),
        sa.UniqueConstraint("issuer", "subject", name=op.f("uq_user_issuer_subject")),
    )


def downgrade() -> None:
    op.drop_table("user")
    op.drop_index(op.f("ix_task_site_id"), table_name="task")
    op.drop_table("task")
    op.drop_index(op.f("ix_site_infrastructure_provider_id"), table_name="site")
    op.drop_table("site")
    op.drop_table("infrastructure_provider")
