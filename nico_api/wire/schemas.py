"""The API's shapes, and their translation from what Flow stores."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from sqlalchemy import Row

from nico_api.vocabulary import PhaseStatus

if TYPE_CHECKING:  # the wire format reads stored records, and needs no storage to load
    from nico_api.storage import models


class TaskStatus(StrEnum):
    UNKNOWN = "Unknown"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATED = "Terminated"


# Flow's stored statuses (nico_api.vocabulary) on the left; anything else reads as Unknown.
FLOW_STATUS = {
    "unknown": TaskStatus.UNKNOWN,
    "pending": TaskStatus.PENDING,
    "waiting": TaskStatus.PENDING,
    "running": TaskStatus.RUNNING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "terminated": TaskStatus.TERMINATED,
}
# Production's page size when none (or 0) is given; the spec states it as pageSize's default.
DEFAULT_PAGE_SIZE = 20


# The forms production's UUID parser takes, in ASCII hex only: canonical, {braced}, urn:uuid:,
# and 32 bare digits.
_CANONICAL = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
UUID_TEXT = re.compile(
    rf"{_CANONICAL}|\{{{_CANONICAL}\}}|urn:uuid:{_CANONICAL}|[0-9a-fA-F]{{32}}", re.ASCII
)


def rest_status(flow_status: str) -> TaskStatus:
    return FLOW_STATUS.get(flow_status, TaskStatus.UNKNOWN)


def as_utc(value: datetime) -> datetime:
    """Offsets become UTC; a time without an offset was written in UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None


def _text_only(value: Any) -> Any:
    # A report's timestamps are RFC 3339 text; numbers are not read as epoch seconds.
    if not isinstance(value, str):
        raise ValueError("a timestamp must be RFC 3339 text")
    return value


def _only_version_1(value: int) -> int:
    if value != 1:
        raise ValueError("only version 1 reports are read")
    return value


def go_time(value: datetime) -> str:
    """A UTC time as Go's RFC3339Nano writes it: fractional seconds without trailing zeros."""
    text = value.replace(tzinfo=None).isoformat()  # four-digit years, as Go writes them
    return (text.rstrip("0") if value.microsecond else text) + "Z"


UTCTime = Annotated[
    datetime, AfterValidator(as_utc), PlainSerializer(go_time, return_type=str, when_used="json")
]
ReportTime = Annotated[UTCTime, BeforeValidator(_text_only)]
Count = Annotated[StrictInt, Field(ge=0)]
# An empty message is no message: optional report fields are omitted, never sent empty.
ReportText = Annotated[StrictStr, AfterValidator(lambda text: text or None)]


def _absent(value: Any) -> bool:
    return value is None


def omitted_when_absent() -> Any:
    """An optional field that is left out of the JSON when it has no value, never sent as null."""
    return Field(default=None, exclude_if=_absent)


class ReportModel(BaseModel):
    """Read from Flow's snake_case document, written as camelCase; empty optionals are omitted."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=False,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
    )


class TaskReportV1Step(ReportModel):
    component_type: StrictStr
    status: PhaseStatus
    # Always sent, 0 included; Flow stores the succeeded count as `completed_components`.
    total_components: Count = 0
    completed_components: Count = Field(default=0, serialization_alias="succeededComponents")
    failed_components: Count = 0
    started_at: ReportTime | None = omitted_when_absent()
    finished_at: ReportTime | None = omitted_when_absent()
    error: ReportText | None = omitted_when_absent()


class TaskReportV1Stage(ReportModel):
    number: Annotated[StrictInt, Field(ge=1)]
    status: PhaseStatus
    steps: list[TaskReportV1Step]
    started_at: ReportTime | None = omitted_when_absent()
    finished_at: ReportTime | None = omitted_when_absent()
    error: ReportText | None = omitted_when_absent()


class TaskReportV1(ReportModel):
    version: Annotated[StrictInt, AfterValidator(_only_version_1)]
    stages: list[TaskReportV1Stage]
    error: ReportText | None = omitted_when_absent()

    @classmethod
    def from_stored(cls, stored: Any) -> TaskReportV1 | None:
        """Flow's stored report, or None when there is none or it is not a usable v1 report."""
        if isinstance(stored, str | bytes):
            try:
                stored = json.loads(stored)
            except ValueError:
                return None
        if not isinstance(stored, dict):
            return None
        try:
            return cls.model_validate(stored)
        except ValidationError:
            return None


class Task(BaseModel):
    """A Task as the REST API presents it."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )

    id: uuid.UUID
    status: TaskStatus
    description: str
    message: str
    rule_id: uuid.UUID | None
    started: UTCTime | None
    finished: UTCTime | None
    created: UTCTime
    updated: UTCTime
    # Unset times and rule are sent as null; an absent report is left out.
    report: TaskReportV1 | None = omitted_when_absent()

    @classmethod
    def from_record(cls, task: models.Task | Row[Any]) -> Task:
        """From a stored task: the ORM object, or a row with the task table's columns (a list's
        rows may leave the report out)."""
        return cls(
            id=task.id,
            status=rest_status(task.status),
            description=task.description or "",
            message=task.message or "",
            rule_id=task.applied_rule_id,
            started=task.started_at,
            finished=task.finished_at,
            created=task.created_at,
            updated=task.updated_at,
            report=TaskReportV1.from_stored(getattr(task, "report", None)),
        )


class User(BaseModel):
    """The current user as the REST API presents it."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )

    id: uuid.UUID
    email: str | None
    first_name: str | None
    last_name: str | None
    created: UTCTime
    updated: UTCTime

    @classmethod
    def from_record(cls, user: models.User) -> User:
        return cls(
            id=user.id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            created=user.created,
            updated=user.updated,
        )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class TaskList(RootModel[list[Task]]):
    """A page of tasks."""


class Pagination(BaseModel):
    """The X-Pagination header of a list."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    page_number: int
    page_size: int
    total: int
    # Production always writes it, as null: tasks have no sortable field.
    order_by: None = None


class TaskIds(BaseModel):
    """What an operation that creates tasks answers: UpdatePowerStateResponse,
    FirmwareUpdateResponse and BringUpRackResponse alike."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True, frozen=True
    )

    task_ids: list[str]
