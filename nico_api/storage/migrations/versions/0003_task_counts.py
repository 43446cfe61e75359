"""Task counts: the lists' totals per site, rack and component, kept by triggers.

How totals are kept. A list's `total` must not cost a scan of the filtered set, so `task_count`
holds one row per (site, scope, scope id, active): how many tasks a site has, a rack has (scope
`rack`) and a component such as a tray has (scope `component`, from `task_component`), active
(pending, waiting, running) or not. Every write to `task` or `task_component`, whichever path
makes it, moves the counts in the same transaction: the rows it takes away are counted out (-1)
and the rows it leaves are counted in (+1).

SQLite (one writer at a time) does this row by row, adding each row's changes to the counts.
PostgreSQL does it per statement, from the statement's transition tables, and does not touch
`task_count` then: it records the statement's net changes in `task_count_change`, and the first
of a transaction's recorded changes folds them all into `task_count` when the transaction
commits (a deferred trigger). So a transaction that writes a million tasks updates each count
once, not a million times, and the counts' rows are locked only at commit, in key order, so that
writers never deadlock on them. A change to a task's components first locks its task (FOR
SHARE), so that a concurrent change of the task's status either waits or is seen. TRUNCATE
empties the counts it makes wrong. `nico-api db recount` counts afresh from the rows.

The SQL below is literal, one statement per database and trigger; the statuses are written out
because a migration must not follow later code.

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

# The tasks already stored, counted once.
BACKFILL = """
INSERT INTO task_count (site_id, scope, scope_id, active, tasks)
SELECT site_id, 'site', site_id, status IN ('pending', 'waiting', 'running'), count(*)
  FROM task
 GROUP BY site_id, status IN ('pending', 'waiting', 'running')
UNION ALL
SELECT site_id, 'rack', rack_id, status IN ('pending', 'waiting', 'running'), count(*)
  FROM task
 WHERE rack_id IS NOT NULL
 GROUP BY site_id, rack_id, status IN ('pending', 'waiting', 'running')
UNION ALL
SELECT t.site_id, 'component', c.component_id, t.status IN ('pending', 'waiting', 'running'),
       count(*)
  FROM task_component c JOIN task t ON t.id = c.task_id
 GROUP BY t.site_id, c.component_id, t.status IN ('pending', 'waiting', 'running')
"""

# SQLite: each trigger adds one row's changes (`delta`) to the counts, in key order.
SQLITE_ADD_CHANGES = """
INSERT INTO task_count (site_id, scope, scope_id, active, tasks)
SELECT site_id, scope, scope_id, active, sum(delta) FROM ({changes}) AS change
 WHERE true
 GROUP BY site_id, scope, scope_id, active HAVING sum(delta) <> 0
 ORDER BY site_id, scope, scope_id, active
    ON CONFLICT (site_id, scope, scope_id, active)
    DO UPDATE SET tasks = task_count.tasks + excluded.tasks
"""
# The counts a task row belongs to: its site's, its rack's, and each of its components'.
SQLITE_OLD_TASK = """
SELECT OLD.site_id AS site_id, 'site' AS scope, OLD.site_id AS scope_id,
       OLD.status IN ('pending', 'waiting', 'running') AS active, -1 AS delta
UNION ALL
SELECT OLD.site_id, 'rack', OLD.rack_id, OLD.status IN ('pending', 'waiting', 'running'), -1
 WHERE OLD.rack_id IS NOT NULL
UNION ALL
SELECT OLD.site_id, 'component', c.component_id,
       OLD.status IN ('pending', 'waiting', 'running'), -1
  FROM task_component c WHERE c.task_id = OLD.id
"""
SQLITE_NEW_TASK = """
SELECT NEW.site_id AS site_id, 'site' AS scope, NEW.site_id AS scope_id,
       NEW.status IN ('pending', 'waiting', 'running') AS active, 1 AS delta
UNION ALL
SELECT NEW.site_id, 'rack', NEW.rack_id, NEW.status IN ('pending', 'waiting', 'running'), 1
 WHERE NEW.rack_id IS NOT NULL
UNION ALL
SELECT NEW.site_id, 'component', c.component_id,
       NEW.status IN ('pending', 'waiting', 'running'), 1
  FROM task_component c WHERE c.task_id = NEW.id
"""
# The count a task_component row belongs to: its component's, at its task's site.
SQLITE_OLD_COMPONENT = """
SELECT t.site_id AS site_id, 'component' AS scope, OLD.component_id AS scope_id,
       t.status IN ('pending', 'waiting', 'running') AS active, -1 AS delta
  FROM task t WHERE t.id = OLD.task_id
"""
SQLITE_NEW_COMPONENT = """
SELECT t.site_id AS site_id, 'component' AS scope, NEW.component_id AS scope_id,
       t.status IN ('pending', 'waiting', 'running') AS active, 1 AS delta
  FROM task t WHERE t.id = NEW.task_id
"""
# name: (table, event, the rows counted out and in)
SQLITE_TRIGGERS = {
    "task_count_task_insert": ("task", "INSERT", [SQLITE_NEW_TASK]),
    "task_count_task_update": ("task", "UPDATE", [SQLITE_OLD_TASK, SQLITE_NEW_TASK]),
    "task_count_task_delete": ("task", "DELETE", [SQLITE_OLD_TASK]),
    "task_count_component_insert": ("task_component", "INSERT", [SQLITE_NEW_COMPONENT]),
    "task_count_component_update": (
        "task_component",
        "UPDATE",
        [SQLITE_OLD_COMPONENT, SQLITE_NEW_COMPONENT],
    ),
    "task_count_component_delete": ("task_component", "DELETE", [SQLITE_OLD_COMPONENT]),
}

# PostgreSQL: each statement's net changes, recorded for the fold at commit.
POSTGRESQL_RECORD_CHANGES = """
INSERT INTO task_count_change (xact, site_id, scope, scope_id, active, tasks)
SELECT txid_current(), site_id, scope, scope_id, active, sum(delta) FROM ({changes}) AS change
 GROUP BY site_id, scope, scope_id, active HAVING sum(delta) <> 0
"""
POSTGRESQL_OLD_TASKS = """
SELECT o.site_id AS site_id, 'site' AS scope, o.site_id AS scope_id,
       o.status IN ('pending', 'waiting', 'running') AS active, -1 AS delta
  FROM old_rows AS o
UNION ALL
SELECT o.site_id, 'rack', o.rack_id, o.status IN ('pending', 'waiting', 'running'), -1
  FROM old_rows AS o WHERE o.rack_id IS NOT NULL
UNION ALL
SELECT o.site_id, 'component', c.component_id, o.status IN ('pending', 'waiting', 'running'), -1
  FROM old_rows AS o JOIN task_component c ON c.task_id = o.id
"""
POSTGRESQL_NEW_TASKS = """
SELECT n.site_id AS site_id, 'site' AS scope, n.site_id AS scope_id,
       n.status IN ('pending', 'waiting', 'running') AS active, 1 AS delta
  FROM new_rows AS n
UNION ALL
SELECT n.site_id, 'rack', n.rack_id, n.status IN ('pending', 'waiting', 'running'), 1
  FROM new_rows AS n WHERE n.rack_id IS NOT NULL
UNION ALL
SELECT n.site_id, 'component', c.component_id, n.status IN ('pending', 'waiting', 'running'), 1
  FROM new_rows AS n JOIN task_component c ON c.task_id = n.id
"""
POSTGRESQL_OLD_COMPONENTS = """
SELECT t.site_id AS site_id, 'component' AS scope, o.component_id AS scope_id,
       t.status IN ('pending', 'waiting', 'running') AS active, -1 AS delta
  FROM old_rows AS o JOIN task t ON t.id = o.task_id
"""
POSTGRESQL_NEW_COMPONENTS = """
SELECT t.site_id AS site_id, 'component' AS scope, n.component_id AS scope_id,
       t.status IN ('pending', 'waiting', 'running') AS active, 1 AS delta
  FROM new_rows AS n JOIN task t ON t.id = n.task_id
"""
# Before their status and site are read, the tasks whose components change are locked.
POSTGRESQL_LOCK_OLD = "PERFORM 1 FROM task t JOIN old_rows AS o ON t.id = o.task_id"
POSTGRESQL_LOCK_NEW = "PERFORM 1 FROM task t JOIN new_rows AS n ON t.id = n.task_id"
POSTGRESQL_LOCK = " ORDER BY t.id FOR SHARE OF t;"
# name: (table, event, transition tables, locks, the rows counted out and in)
POSTGRESQL_TRIGGERS = {
    "task_count_task_insert": (
        "task",
        "INSERT",
        "NEW TABLE AS new_rows",
        [],
        [POSTGRESQL_NEW_TASKS],
    ),
    "task_count_task_update": (
        "task",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        [],
        [POSTGRESQL_OLD_TASKS, POSTGRESQL_NEW_TASKS],
    ),
    "task_count_task_delete": (
        "task",
        "DELETE",
        "OLD TABLE AS old_rows",
        [],
        [POSTGRESQL_OLD_TASKS],
    ),
    "task_count_component_insert": (
        "task_component",
        "INSERT",
        "NEW TABLE AS new_rows",
        [POSTGRESQL_LOCK_NEW],
        [POSTGRESQL_NEW_COMPONENTS],
    ),
    "task_count_component_update": (
        "task_component",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        [POSTGRESQL_LOCK_OLD, POSTGRESQL_LOCK_NEW],
        [POSTGRESQL_OLD_COMPONENTS, POSTGRESQL_NEW_COMPONENTS],
    ),
    "task_count_component_delete": (
        "task_component",
        "DELETE",
        "OLD TABLE AS old_rows",
        [POSTGRESQL_LOCK_OLD],
        [POSTGRESQL_OLD_COMPONENTS],
    ),
}
# At commit, the first of the transaction's recorded changes folds them all into the counts;
# the others find themselves folded already (one primary-key lookup each).
POSTGRESQL_FOLD = """
CREATE FUNCTION task_count_fold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  IF EXISTS (SELECT 1 FROM task_count_change WHERE id = NEW.id) THEN
    WITH folded AS (
      DELETE FROM task_count_change WHERE xact = txid_current()
      RETURNING site_id, scope, scope_id, active, tasks
    )
    INSERT INTO task_count (site_id, scope, scope_id, active, tasks)
    SELECT site_id, scope, scope_id, active, sum(tasks) FROM folded
     WHERE true
     GROUP BY site_id, scope, scope_id, active HAVING sum(tasks) <> 0
     ORDER BY site_id, scope, scope_id, active
        ON CONFLICT (site_id, scope, scope_id, active)
        DO UPDATE SET tasks = task_count.tasks + excluded.tasks;
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER task_count_fold AFTER INSERT ON task_count_change
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION task_count_fold();
"""
# What a TRUNCATE of each table empties: the counts, and this transaction's recorded changes.
POSTGRESQL_TRUNCATES = """
CREATE FUNCTION task_count_task_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  DELETE FROM task_count;
  DELETE FROM task_count_change WHERE xact = txid_current();
  RETURN NULL;
END $$;
CREATE TRIGGER task_count_task_truncate AFTER TRUNCATE ON task
  FOR EACH STATEMENT EXECUTE FUNCTION task_count_task_truncate();
CREATE FUNCTION task_count_task_component_truncate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  DELETE FROM task_count WHERE scope = 'component';
  DELETE FROM task_count_change WHERE xact = txid_current() AND scope = 'component';
  RETURN NULL;
END $$;
CREATE TRIGGER task_count_task_component_truncate AFTER TRUNCATE ON task_component
  FOR EACH STATEMENT EXECUTE FUNCTION task_count_task_component_truncate();
"""
POSTGRESQL_OTHER_TRIGGERS = {
    "task_count_fold": "task_count_change",
    "task_count_task_truncate": "task",
    "task_count_task_component_truncate": "task_component",
}


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
    if op.get_bind().dialect.name == "postgresql":
        # No write between the count of the stored tasks and the triggers taking over.
        op.execute("LOCK TABLE task, task_component IN SHARE ROW EXCLUSIVE MODE")
        op.execute(BACKFILL)
        op.execute(POSTGRESQL_FOLD)
        op.execute(POSTGRESQL_TRUNCATES)
        for name, (table, event, tables, locks, rows) in POSTGRESQL_TRIGGERS.items():
            lock = "".join(f"{statement}{POSTGRESQL_LOCK} " for statement in locks)
            record = POSTGRESQL_RECORD_CHANGES.format(changes=" UNION ALL ".join(rows))
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN {lock}{record}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {tables}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    else:
        op.execute(BACKFILL)
        for name, (table, event, rows) in SQLITE_TRIGGERS.items():
            add = SQLITE_ADD_CHANGES.format(changes=" UNION ALL ".join(rows))
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN {add}; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        triggers = {name: table for name, (table, *_) in POSTGRESQL_TRIGGERS.items()}
        for name, table in {**triggers, **POSTGRESQL_OTHER_TRIGGERS}.items():
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION {name}()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index(op.f("ix_task_count_change_xact"), table_name="task_count_change")
    op.drop_table("task_count_change")
    op.drop_table("task_count")
