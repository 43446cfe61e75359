"""Task counts: the lists' totals per site, rack and component, kept by triggers.

A list's `total` must not cost a scan of the filtered set, so every write to `task` or
`task_component` changes the counts in the same transaction, whichever path makes it.

SQLite (one writer at a time) updates the counts row by row. PostgreSQL records each
statement's net changes in `task_count_change` and folds a transaction's changes into
`task_count` once, when it commits: a transaction that writes a million tasks updates each
count once instead of a million times (row versions piling up on one row), and the counts'
row locks are taken only at commit, in key order, so writers never deadlock on them.

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
KEYS = "site_id, scope, scope_id, active"
# name: (table, event, the rows counted out (OLD, -1) and in (NEW, +1))
TRIGGERS = {
    "task_count_task_insert": ("task", "INSERT", (("NEW", 1),)),
    "task_count_task_update": ("task", "UPDATE", (("OLD", -1), ("NEW", 1))),
    "task_count_task_delete": ("task", "DELETE", (("OLD", -1),)),
    "task_count_component_insert": ("task_component", "INSERT", (("NEW", 1),)),
    "task_count_component_update": ("task_component", "UPDATE", (("OLD", -1), ("NEW", 1))),
    "task_count_component_delete": ("task_component", "DELETE", (("OLD", -1),)),
}
# PostgreSQL: what a TRUNCATE of each table empties, with this transaction's recorded changes.
TRUNCATED = {"task": "true", "task_component": "scope = 'component'"}
# PostgreSQL's triggers run per statement, over its transition tables.
TRANSITION_TABLES = {"OLD": ("old_rows", "o"), "NEW": ("new_rows", "n")}
FOLD = "task_count_fold"


def _task_rows(row: str, sign: int, rows: str | None) -> str:
    """The counts task rows belong to: their site, their rack, and each component they target.
    `row` is the trigger's OLD or NEW, or, with `rows`, an alias over a transition table."""
    active = f"{row}.status IN {ACTIVE}"
    each = f" FROM {rows} AS {row}" if rows else ""
    targets = f"{rows} AS {row} JOIN task_component c ON" if rows else "task_component c WHERE"
    return (
        f"SELECT {row}.site_id AS site_id, 'site' AS scope, {row}.site_id AS scope_id,"
        f" {active} AS active, {sign} AS delta{each}"
        f" UNION ALL SELECT {row}.site_id, 'rack', {row}.rack_id, {active}, {sign}{each}"
        f" WHERE {row}.rack_id IS NOT NULL"
        f" UNION ALL SELECT {row}.site_id, 'component', c.component_id, {active}, {sign}"
        f" FROM {targets} c.task_id = {row}.id"
    )


def _component_rows(row: str, sign: int, rows: str | None) -> str:
    """The counts task_component rows belong to: their component's, at their task's site."""
    tasks = f"{rows} AS {row} JOIN task t ON" if rows else "task t WHERE"
    return (
        f"SELECT t.site_id AS site_id, 'component' AS scope, {row}.component_id AS scope_id,"
        f" t.status IN {ACTIVE} AS active, {sign} AS delta"
        f" FROM {tasks} t.id = {row}.task_id"
    )


def _changes(table: str, sides: Sequence[tuple[str, int]], postgresql: bool) -> str:
    counted = _task_rows if table == "task" else _component_rows
    parts = []
    for row, sign in sides:
        if postgresql:
            rows, alias = TRANSITION_TABLES[row]
            parts.append(counted(alias, sign, rows))
        else:
            parts.append(counted(row, sign, None))
    return " UNION ALL ".join(parts)


def _add_to_counts(changes: str, delta: str = "delta") -> str:
    """One upsert of the net changes, in key order."""
    return (
        f"INSERT INTO task_count ({KEYS}, tasks)"
        f" SELECT {KEYS}, sum({delta}) FROM {changes}"
        f" WHERE true GROUP BY {KEYS} HAVING sum({delta}) <> 0 ORDER BY {KEYS}"
        f" ON CONFLICT ({KEYS}) DO UPDATE SET tasks = task_count.tasks + excluded.tasks"
    )


def _record_changes(changes: str) -> str:
    return (
        f"INSERT INTO task_count_change (xact, {KEYS}, tasks)"
        f" SELECT txid_current(), {KEYS}, sum(delta) FROM ({changes}) AS change"
        f" GROUP BY {KEYS} HAVING sum(delta) <> 0"
    )


def _lock_tasks(sides: Sequence[tuple[str, int]]) -> str:
    """PostgreSQL: the tasks whose components change are locked (FOR SHARE) before their status
    and site are read, so that a concurrent change to such a task either waits for this
    transaction (and then sees its components) or is seen by it: never missed by both."""
    return "; ".join(
        f"PERFORM 1 FROM task t JOIN {rows} AS {alias} ON t.id = {alias}.task_id"
        " ORDER BY t.id FOR SHARE OF t"
        for rows, alias in (TRANSITION_TABLES[row] for row, _ in sides)
    )


def _create_fold() -> None:
    """At commit, the first of the transaction's recorded changes folds them all into the counts;
    the others find themselves already folded (one primary-key lookup each)."""
    op.execute(
        f"CREATE FUNCTION {FOLD}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF EXISTS (SELECT 1 FROM task_count_change WHERE id = NEW.id) THEN"
        " WITH folded AS (DELETE FROM task_count_change WHERE xact = txid_current()"
        f" RETURNING {KEYS}, tasks) {_add_to_counts('folded', 'tasks')};"
        " END IF; RETURN NULL; END $$"
    )
    op.execute(
        f"CREATE CONSTRAINT TRIGGER {FOLD} AFTER INSERT ON task_count_change"
        f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {FOLD}()"
    )


def _create_truncates() -> None:
    for table, counts in TRUNCATED.items():
        op.execute(
            f"CREATE FUNCTION task_count_{table}_truncate() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN DELETE FROM task_count WHERE {counts};"
            f" DELETE FROM task_count_change WHERE xact = txid_current() AND {counts};"
            " RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER task_count_{table}_truncate AFTER TRUNCATE ON {table}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION task_count_{table}_truncate()"
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
    op.create_table(
        "task_count_change",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("xact", sa.BigInteger(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_count_change")),
    )
    op.create_index(op.f("ix_task_count_change_xact"), "task_count_change", ["xact"])
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # No write between the count of the stored tasks and the triggers taking over.
        op.execute("LOCK TABLE task, task_component IN SHARE ROW EXCLUSIVE MODE")
    # The tasks already stored, counted once.
    op.execute(_backfill())
    if postgresql:
        _create_fold()
        _create_truncates()
    for name, (table, event, sides) in TRIGGERS.items():
        changes = _changes(table, sides, postgresql)
        if postgresql:
            lock = f"{_lock_tasks(sides)}; " if table == "task_component" else ""
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN {lock}{_record_changes(changes)}; RETURN NULL; END $$"
            )
            tables = " ".join(f"{row} TABLE AS {TRANSITION_TABLES[row][0]}" for row, _ in sides)
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {tables}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table}"
                f" FOR EACH ROW BEGIN {_add_to_counts(f'({changes}) AS change')}; END"
            )


def _backfill() -> str:
    active = f"status IN {ACTIVE}"
    return (
        f"INSERT INTO task_count ({KEYS}, tasks)"
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
    triggers = {name: table for name, (table, _, _) in TRIGGERS.items()}
    if postgresql:
        triggers[FOLD] = "task_count_change"
        triggers.update({f"task_count_{table}_truncate": table for table in TRUNCATED})
    for name, table in triggers.items():
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    op.drop_index(op.f("ix_task_count_change_xact"), table_name="task_count_change")
    op.drop_table("task_count_change")
    op.drop_table("task_count")
