"""Task counts: the lists' totals per site, rack and component, kept by triggers.

A list's `total` must not cost a scan of the filtered set, so every write to `task` or
`task_component` adjusts the counts in the same transaction, whichever path makes it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Flow statuses listed as Pending or Running (frozen here: a migration must not follow the code).
ACTIVE = "('pending', 'waiting', 'running')"
# The advisory lock class of the per-site count locks ("NICO").
LOCK_CLASS = 0x4E49434F
TRIGGERS = {
    # name: (table, event, counted rows as (row, sign) pairs)
    "task_count_task_insert": ("task", "INSERT", (("NEW", 1),)),
    "task_count_task_update": (
        "task",
        "UPDATE OF site_id, rack_id, status",
        (("OLD", -1), ("NEW", 1)),
    ),
    "task_count_task_delete": ("task", "DELETE", (("OLD", -1),)),
    "task_count_component_insert": ("task_component", "INSERT", (("NEW", 1),)),
    "task_count_component_update": ("task_component", "UPDATE", (("OLD", -1), ("NEW", 1))),
    "task_count_component_delete": ("task_component", "DELETE", (("OLD", -1),)),
}


def _task_rows(row: str, sign: int) -> str:
    """The counts a task row belongs to: its site, its rack, and each component it targets."""
    active = f"{row}.status IN {ACTIVE}"
    return (
        f"SELECT {row}.site_id AS site_id, 'site' AS scope, {row}.site_id AS scope_id,"
        f" {active} AS active, {sign} AS delta"
        f" UNION ALL SELECT {row}.site_id, 'rack', {row}.rack_id, {active}, {sign}"
        f" WHERE {row}.rack_id IS NOT NULL"
        f" UNION ALL SELECT {row}.site_id, 'component', c.component_id, {active}, {sign}"
        f" FROM task_component c WHERE c.task_id = {row}.id"
    )


def _component_rows(row: str, sign: int) -> str:
    """The count a task_component row belongs to: its component's, at its task's site."""
    return (
        f"SELECT t.site_id AS site_id, 'component' AS scope, {row}.component_id AS scope_id,"
        f" t.status IN {ACTIVE} AS active, {sign} AS delta"
        f" FROM task t WHERE t.id = {row}.task_id"
    )


def _changes(table: str, rows: Sequence[tuple[str, int]]) -> str:
    counted = _task_rows if table == "task" else _component_rows
    return " UNION ALL ".join(counted(row, sign) for row, sign in rows)


def _adjust(changes: str) -> str:
    """One upsert of the net changes."""
    keys = "site_id, scope, scope_id, active"
    return (
        f"INSERT INTO task_count ({keys}, tasks)"
        f" SELECT {keys}, sum(delta) FROM ({changes}) AS change"
        f" WHERE true GROUP BY {keys} HAVING sum(delta) <> 0 ORDER BY {keys}"
        f" ON CONFLICT ({keys}) DO UPDATE SET tasks = task_count.tasks + excluded.tasks"
    )


def _lock_sites(changes: str) -> str:
    """PostgreSQL: one writer of a site's counts at a time, until it commits. Without it, two
    transactions that touch a site's counts in different orders (a load and a cancel) deadlock."""
    return (
        f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, hashtext(site_id::text))"
        f" FROM (SELECT DISTINCT site_id FROM ({changes}) AS change ORDER BY site_id) AS sites"
    )


def upgrade() -> None:
    op.create_table(
        "task_count",
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "site_id", "scope", "scope_id", "active", name=op.f("pk_task_count")
        ),
    )
    # The tasks already stored, counted once.
    op.execute(_backfill())
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, (table, event, rows) in TRIGGERS.items():
        changes = _changes(table, rows)
        if postgresql:
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN {_lock_sites(changes)}; {_adjust(changes)}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table}"
                f" FOR EACH ROW BEGIN {_adjust(changes)}; END"
            )


def _backfill() -> str:
    active = f"status IN {ACTIVE}"
    keys = "site_id, scope, scope_id, active"
    return (
        f"INSERT INTO task_count ({keys}, tasks)"
        f" SELECT site_id, 'site', site_id, {active}, count(*) FROM task"
        f" GROUP BY site_id, {active}"
        f" UNION ALL SELECT site_id, 'rack', rack_id, {active}, count(*) FROM task"
        f" WHERE rack_id IS NOT NULL GROUP BY site_id, rack_id, {active}"
        f" UNION ALL SELECT t.site_id, 'component', c.component_id, t.{active}, count(*)"
        f" FROM task_component c JOIN task t ON t.id = c.task_id"
        f" GROUP BY t.site_id, c.component_id, t.{active}"
    )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, (table, _, _) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("task_count")
