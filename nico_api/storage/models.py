"""What the service stores: providers, their sites, each site's racks and trays (Flow's
inventory) and operation rules, and the tasks Flow runs at each site."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    Uuid,
    column,
    literal,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from nico_api.vocabulary import ACTIVE_STATUSES


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored and read back as an aware UTC datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must carry a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite keeps no offset: what was written was UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Flow's report document: native jsonb on PostgreSQL; SQL NULL (not JSON null) when absent.
ReportDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them on every database.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, uuid.UUID: Uuid}  # noqa: RUF012


class InfrastructureProvider(Base):
    """The org's provider of infrastructure: owns the org's Sites."""

    __tablename__ = "infrastructure_provider"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    org: Mapped[str] = mapped_column(String(256), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Site(Base):
    """A data centre location; NICo Flow runs tasks at Sites where it is enabled."""

    __tablename__ = "site"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    infrastructure_provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("infrastructure_provider.id"), index=True
    )
    flow_enabled: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Rack(Base):
    """A rack in a Site's inventory; production's REST API names it by its external id."""

    __tablename__ = "rack"
    __table_args__ = (UniqueConstraint("site_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256))
    # The simulated Flow fails this rack's tasks with this text (None: they succeed).
    failure: Mapped[str | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Tray(Base):
    """A component of a rack (a compute tray, an NVLink switch, a power shelf); production's REST
    API names it by its external component id or its BMC's MAC address."""

    __tablename__ = "tray"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    rack_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rack.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(256), index=True)
    # Lower-case, colon-separated: how a MAC address in a request is matched.
    bmc_mac: Mapped[str | None] = mapped_column(String(17), index=True)
    type: Mapped[str] = mapped_column(String(32))
    slot: Mapped[int] = mapped_column(Integer)
    # The simulated Flow fails this component's step with this text (None: it succeeds).
    failure: Mapped[str | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OperationRule(Base):
    """A Site's rule for an operation: its stages, each a set of steps by component type."""

    __tablename__ = "operation_rule"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    # Flow's operation: power_on, power_off, restart, ..., firmware_update, bring_up.
    operation: Mapped[str] = mapped_column(String(32))
    # The Site's rule for its operation when a request names none.
    is_default: Mapped[bool] = mapped_column(default=False)
    # [{"number": 1, "steps": [{"component_type": "PowerShelf"}, ...]}, ...]
    stages: Mapped[Any] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# A task that is active: its statuses are written into the SQL (not bound), so that the
# planners of both databases match it with the partial index below.
ACTIVE_TASK = column("status").in_(
    [literal(status, literal_execute=True) for status in ACTIVE_STATUSES]
)


class Task(Base):
    """A task as NICo Flow stores it: Flow's status vocabulary and snake_case report."""

    __tablename__ = "task"
    # Lists page through a site's (or rack's) tasks newest first; a site's active tasks have
    # their own index, so that a page of them is not a walk past every finished task.
    __table_args__ = (
        Index("ix_task_site_id_created_at_id", "site_id", "created_at", "id"),
        Index("ix_task_rack_id_created_at_id", "rack_id", "created_at", "id"),
        # Flow's executor finds the steps that are due, and a rack's queue its oldest task.
        Index("ix_task_due_at", "due_at"),
        Index("ix_task_status_rack_id_created_at", "status", "rack_id", "created_at"),
        Index(
            "ix_task_active_site_id_created_at_id",
            "site_id",
            "created_at",
            "id",
            sqlite_where=ACTIVE_TASK,
            postgresql_where=ACTIVE_TASK,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"), index=True)
    rack_id: Mapped[uuid.UUID | None]
    description: Mapped[str] = mapped_column(default="")
    message: Mapped[str] = mapped_column(default="")
    status: Mapped[str] = mapped_column(String(32))
    applied_rule_id: Mapped[uuid.UUID | None]
    report: Mapped[Any] = mapped_column(ReportDocument, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Flow's task type (power_control, firmware_control, bring_up), the operation as requested,
    # and the targeted components by type ({"components_by_type": {"Compute": [ids]}}).
    type: Mapped[str | None] = mapped_column(String(32))
    information: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    attributes: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    # A waiting task is terminated when its turn has not come by then.
    queue_expires_at: Mapped[datetime | None]
    # The simulated Flow's execution: the stages to run, how many of its steps are done, and
    # when the next one is due (None: nothing to run).
    plan: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    progress: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    due_at: Mapped[datetime | None]


class TaskComponent(Base):
    """A component (such as a tray) that a task targets: tasks are listed by it."""

    __tablename__ = "task_component"

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("task.id"), primary_key=True)
    component_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, index=True)


class TaskCount(Base):
    """How many tasks a site, a rack or a component at a site has, active or not: the lists'
    totals, kept by database triggers with every write to `task` and `task_component`
    (migration 0003)."""

    __tablename__ = "task_count"

    site_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # "site" (scope_id is the site's id), "rack" or "component".
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    active: Mapped[bool] = mapped_column(primary_key=True)
    tasks: Mapped[int]


class TaskCountChange(Base):
    """PostgreSQL: changes to the task counts made by a transaction still in progress, folded
    into `task_count` when it commits, so that each count is updated once per transaction
    however many tasks it writes. SQLite updates the counts directly and leaves this empty."""

    __tablename__ = "task_count_change"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    xact: Mapped[int] = mapped_column(BigInteger, index=True)
    site_id: Mapped[uuid.UUID]
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[uuid.UUID]
    active: Mapped[bool]
    tasks: Mapped[int]


class User(Base):
    """A caller the API has seen, keyed by identity provider and subject."""

    __tablename__ = "user"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    issuer: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str] = mapped_column(String(1024))
    email: Mapped[str | None]
    first_name: Mapped[str | None]
    last_name: Mapped[str | None]
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowRun(Base):
    """The last submission of each of a Site's workflow ids, as Flow deduplicates identical
    orders: when it was answered and the tasks it made. An identical order received before
    this answer was committed (it saw an older one, or none) was in flight with it, and joins
    it, whichever process received either."""

    __tablename__ = "workflow_run"

    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id"), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(primary_key=True)
    finished_at: Mapped[datetime]
    task_ids: Mapped[Any] = mapped_column(JSON)
