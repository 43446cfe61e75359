"""Production's behaviour, row by row: the check lists of docs/contract.md for each Task
operation, sent to any server over HTTP, each answer compared with production's.

The expected answers are written out here, never taken from the server's code, so that a wrong
message or a wrong order in the server fails a check. They are production's (docs/contract.md),
except where this server deliberately differs (docs/differences.md): there a row expects
this server's answer and names production's as a known difference. Every request that could
change a record names a random task id no record has, except the cancels of the tasks the
caller names for them when writes are allowed. The operations that create tasks are checked
only when writes are allowed: their requests name a rack or tray no record has, except each
operation's one success, which names the records the caller names for writes."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

if TYPE_CHECKING:
    import httpx

    from nico_api.cli.conformance import KnownValues

# Production's messages (docs/contract.md).
UNKNOWN_PARAMETER = "Unknown query parameter specified in request: foo"
SITE_ID_REQUIRED = "siteId query parameter is required"
NOT_A_MEMBER = "Failed to validate membership for org: {org}"
NOT_PROVIDER_ADMIN = "User does not have Provider Admin role with org"
INVALID_TASK_ID = "Invalid Task ID specified in URL"
INVALID_SITE_ID = "Failed to validate Site specified in request: invalid ID"
NO_SITE = "Site specified in request does not exist"
NO_FLOW = "Site does not have NICo Flow enabled"
NO_TASK = "Task not found"
UNREADABLE = "Failed to parse request data"
CANCEL_INVALID = "Failed to validate cancel task request data"
PAGING_UNREADABLE = "Failed to parse request pagination data"
PAGING_INVALID = "Failed to validate pagination request data"
NO_COMPONENT = 'component identifier "{id}" not found'
NO_RACK = "rack with external id {id} is not found"
NOT_CANCELLABLE = "task cannot be cancelled: task {} has status {}"
# This server's one message per authentication failure (the contract's rows 1-3).
NO_HEADER = "Request is missing authorization header"
BAD_HEADER = "Invalid Authorization header format"
BAD_TOKEN = "Invalid authorization token in request"

# The rows of docs/differences.md that these checks meet, by their "where".
AUTH_DIFFERENCE = "authentication failures"
OTHER_ORG_DIFFERENCE = "an org that the token does not name"
NO_TASK_DIFFERENCE = "a task id that names no task at the Site (get, cancel)"
NO_RACK_DIFFERENCE = "an unknown rack in the rack list"

TARGETS = ("nico-task-api", "production")


class _Any:
    """A part of an answer that is not compared."""

    def __repr__(self) -> str:
        return "any"


ANY: Any = _Any()


@dataclass(frozen=True)
class Answer:
    status: int
    message: str = ANY
    data: Any = ANY

    def given_by(self, response: Response) -> bool:
        return (
            response.status == self.status
            and (self.message is ANY or response.message == self.message)
            and (self.data is ANY or response.data == self.data)
        )

    def __str__(self) -> str:
        text = str(self.status)
        if self.message is not ANY:
            text += f" {json.dumps(self.message)}"
        if self.data is not ANY:
            text += f" data {json.dumps(self.data)}"
        return text


@dataclass(frozen=True)
class Response:
    status: int
    message: Any
    data: Any
    body: Any
    headers: httpx.Headers

    @classmethod
    def of(cls, response: httpx.Response) -> Response:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        envelope = body if isinstance(body, dict) else {}
        return cls(
            response.status_code,
            envelope.get("message", ANY),
            envelope.get("data", ANY),
            body,
            response.headers,
        )

    def __str__(self) -> str:
        if self.message is ANY:
            return f"{self.status} {json.dumps(self.body)[:200]}"
        data = "" if self.data is None or self.data is ANY else f" data {json.dumps(self.data)}"
        return f"{self.status} {json.dumps(self.message)}{data}"


@dataclass(frozen=True)
class Difference:
    """A row of docs/differences.md: production's answer, as far as it is known."""

    where: str
    production: Answer


@dataclass(frozen=True)
class Row:
    """One row of docs/contract.md, as a request that differs from a good one.

    `row` is the row's id (`get-task-5`), or "a before b" for two failing checks of which the
    earlier must answer; list rows name their steps (`{list}-{query}`, ...) because the site-wide
    list numbers them apart from the rack and tray lists."""

    row: str
    condition: str
    status: int
    message: str = ANY
    data: Any = None
    token: str = "admin"  # admin, tenant, none, not bearer, not a token
    org: str = "caller"  # caller, other, upper
    record: str = "unknown"  # the task, rack or tray: unknown, not a uuid, known, urn, cancel
    site: str = "known"  # known, missing, empty, not a uuid, unknown, non-flow
    query: tuple[tuple[str, str], ...] = ()  # after siteId
    body: str | dict[str, Any] | None = None  # raw text, or fields over {"siteId": ...}
    difference: Difference | None = None
    verify: str = ""  # task, cancelled, page, made: further checks of a success
    after: str = ""  # sent after a body's JSON value


FOO = (("foo", "1"),)
NOT_BOOLEAN = (("activeOnly", "yes"),)
AUTH_DIFFERS = Difference(AUTH_DIFFERENCE, Answer(401))
ORG_DIFFERS = Difference(OTHER_ORG_DIFFERENCE, Answer(403))
TASK_DIFFERS = Difference(NO_TASK_DIFFERENCE, Answer(500))

# Every operation: what the auth middleware answers before the handler (docs/contract.md, auth).
AUTH_ROWS = (
    Row("auth-1", "no Authorization header", 401, NO_HEADER, token="none",
        difference=AUTH_DIFFERS),
    Row("auth-2", "an Authorization header that is not Bearer", 401, BAD_HEADER,
        token="not bearer", difference=AUTH_DIFFERS),
    Row("auth-3", "a bearer value that is not a token", 401, BAD_TOKEN, token="not a token",
        difference=AUTH_DIFFERS),
)  # fmt: skip

# get-task and its deprecated path (2.2).
TASK_READ_ROWS = (
    Row("get-task-1", "a query parameter other than siteId", 400, UNKNOWN_PARAMETER, query=FOO),
    Row("get-task-3", "siteId missing", 400, SITE_ID_REQUIRED, site="missing"),
    Row("get-task-3", "siteId empty", 400, SITE_ID_REQUIRED, site="empty"),
    Row("get-task-5", "an org the caller is not a member of", 403, NOT_A_MEMBER, org="other",
        difference=ORG_DIFFERS),
    Row("get-task-6", "a caller without the Provider Admin role", 403, NOT_PROVIDER_ADMIN,
        token="tenant"),
    Row("get-task-8", "a task id that is not a UUID", 400, INVALID_TASK_ID, record="not a uuid"),
    Row("get-task-9", "a siteId that is not a UUID", 400, INVALID_SITE_ID, site="not a uuid"),
    Row("get-task-10", "a Site that does not exist", 400, NO_SITE, site="unknown"),
    Row("get-task-13", "a Site without NICo Flow", 412, NO_FLOW, site="non-flow"),
    Row("get-task-16", "a task that does not exist at the Site", 404, NO_TASK,
        difference=TASK_DIFFERS),
    Row("get-task-17", "a task of the Site", 200, record="known", verify="task"),
    Row("get-task-8", "the task id as urn:uuid (Go's uuid.Parse)", 200, record="urn",
        verify="task"),
    Row("get-task-5", "the org in upper case (read in lower case)", 200, org="upper",
        record="known", verify="task"),
    Row("get-task-1 before get-task-3", "an unknown parameter, no siteId", 400, UNKNOWN_PARAMETER,
        site="missing", query=FOO),
    Row("get-task-1 before get-task-6", "an unknown parameter, without the role", 400,
        UNKNOWN_PARAMETER, token="tenant", query=FOO),
    Row("get-task-3 before get-task-5", "no siteId, in another org", 400, SITE_ID_REQUIRED,
        org="other", site="missing", difference=ORG_DIFFERS),
    Row("get-task-5 before get-task-8", "a task id that is not a UUID, in another org", 403,
        NOT_A_MEMBER, org="other", record="not a uuid", difference=ORG_DIFFERS),
    Row("get-task-6 before get-task-8", "a task id that is not a UUID, without the role", 403,
        NOT_PROVIDER_ADMIN, token="tenant", record="not a uuid"),
    Row("get-task-8 before get-task-9", "neither the task id nor siteId a UUID", 400,
        INVALID_TASK_ID, record="not a uuid", site="not a uuid"),
    Row("get-task-13 before get-task-16", "a task that does not exist, at a Site without Flow", 412,
        NO_FLOW, site="non-flow"),
)  # fmt: skip

# cancel-task and its deprecated path (2.3): the body, not the query, names the Site.
CANCEL_ROWS = (
    Row("cancel-task-2", "an org the caller is not a member of", 403, NOT_A_MEMBER, org="other",
        difference=ORG_DIFFERS),
    Row("cancel-task-3", "a caller without the Provider Admin role", 403, NOT_PROVIDER_ADMIN,
        token="tenant"),
    Row("cancel-task-5", "a task id that is not a UUID", 400, INVALID_TASK_ID, record="not a uuid"),
    Row("cancel-task-6", "a body that is not JSON", 400, UNREADABLE, body="{"),
    Row("cancel-task-6", "a siteId that is not a string", 400, UNREADABLE, body={"siteId": 5}),
    Row("cancel-task-7", "a body without siteId", 400, CANCEL_INVALID, {}, site="missing"),
    Row("cancel-task-7", "an empty siteId", 400, CANCEL_INVALID, {}, site="empty"),
    Row("cancel-task-8", "a siteId that is not a UUID", 400, INVALID_SITE_ID, site="not a uuid"),
    Row("cancel-task-9", "a Site that does not exist", 400, NO_SITE, site="unknown"),
    Row("cancel-task-9", "a Site that does not exist, and fields the handler ignores", 400, NO_SITE,
        site="unknown", body={"reason": "x"}),
    Row("cancel-task-12", "a Site without NICo Flow", 412, NO_FLOW, site="non-flow"),
    Row("cancel-task-13", "a task that does not exist at the Site", 404, NO_TASK,
        difference=TASK_DIFFERS),
    Row("cancel-task-5", "query parameters are not checked", 400, INVALID_TASK_ID,
        record="not a uuid", query=FOO),
    Row("cancel-task-2 before cancel-task-6", "a body that is not JSON, in another org", 403,
        NOT_A_MEMBER, org="other", body="{", difference=ORG_DIFFERS),
    Row("cancel-task-3 before cancel-task-5", "a task id that is not a UUID, without the role", 403,
        NOT_PROVIDER_ADMIN, token="tenant", record="not a uuid"),
    Row("cancel-task-5 before cancel-task-6",
        "a task id that is not a UUID, a body that is not JSON",
        400, INVALID_TASK_ID, record="not a uuid", body="{"),
    Row("cancel-task-12 before cancel-task-13",
        "a task that does not exist, at a Site without Flow",
        412, NO_FLOW, site="non-flow"),
)  # fmt: skip

# Writes: a task the caller named to cancel, cancelled as its state allows, then again.
CANCEL_WRITE_ROWS = (
    Row("cancel-task-14", "a task of the Site", 202, record="cancel", verify="cancelled"),
    Row("cancel-task-14", "the same task again", 202, record="cancel", verify="cancelled"),
)

# The three lists, each row id's number filled in from the list's steps below.
LIST_ROWS = (
    Row("{list}-{query}", "a query parameter the list does not have", 400, UNKNOWN_PARAMETER,
        query=FOO),
    Row("{list}-{bind}", "activeOnly that is not a boolean", 400, UNREADABLE, query=NOT_BOOLEAN),
    Row("{list}-{site_id}", "siteId missing", 400, SITE_ID_REQUIRED, site="missing"),
    Row("{list}-{member}", "an org the caller is not a member of", 403, NOT_A_MEMBER, org="other",
        difference=ORG_DIFFERS),
    Row("{list}-{role}", "a caller without the Provider Admin role", 403, NOT_PROVIDER_ADMIN,
        token="tenant"),
    Row("{list}-{invalid_site}", "a siteId that is not a UUID", 400, INVALID_SITE_ID,
        site="not a uuid"),
    Row("{list}-{no_site}", "a Site that does not exist", 400, NO_SITE, site="unknown"),
    Row("{list}-{flow}", "a Site without NICo Flow", 412, NO_FLOW, site="non-flow"),
    Row("{list}-{paging_bind}", "pageSize that is not an integer", 400, PAGING_UNREADABLE,
        query=(("pageSize", "abc"),)),
    Row("{list}-{paging}", "pageSize=101", 400, PAGING_INVALID,
        {"PageSize": "must be less than or equal to: 100"}, query=(("pageSize", "101"),)),
    Row("{list}-{paging}", "pageNumber=-1", 400, PAGING_INVALID,
        {"PageNumber": "must be greater than 0"}, query=(("pageNumber", "-1"),)),
    Row("{list}-{paging}", "orderBy=created", 400, PAGING_INVALID,
        {"OrderByStr": "must be in the format of field_ASC or field_DESC"},
        query=(("orderBy", "created"),)),
    Row("{list}-{paging}", "orderBy=CREATED_DESC (no field is sortable)", 400, PAGING_INVALID, {},
        query=(("orderBy", "CREATED_DESC"),)),
    Row("{list}-{ok}", "the Site's tasks", 200, record="known", verify="page"),
    Row("{list}-{ok}", "pageSize=0 (the default, 20)", 200, record="known",
        query=(("pageSize", "0"),), verify="page"),
    Row("{list}-{ok}", "pageSize=5 and activeOnly=1 (Go's ParseBool)", 200, record="known",
        query=(("pageSize", "5"), ("activeOnly", "1")), verify="page"),
    Row("{list}-{ok}", "the org in upper case (read in lower case)", 200, org="upper",
        record="known", verify="page"),
    Row("{list}-{query} before {list}-{bind}", "an unknown parameter, activeOnly not a boolean",
        400, UNKNOWN_PARAMETER, query=(*NOT_BOOLEAN, *FOO)),
    Row("{list}-{bind} before {list}-{site_id}", "activeOnly not a boolean, no siteId", 400,
        UNREADABLE, site="missing", query=NOT_BOOLEAN),
    Row("{list}-{no_site} before {list}-{paging}", "a Site that does not exist, pageSize=101", 400,
        NO_SITE, site="unknown", query=(("pageSize", "101"),)),
    Row("{list}-{flow} before {list}-{paging_bind}", "a Site without Flow, pageSize not an integer",
        412, NO_FLOW, site="non-flow", query=(("pageSize", "abc"),)),
)  # fmt: skip

# The site-wide list checks the caller's membership and role before its query (get-all-tasks).
SITE_WIDE_ROWS = (
    Row("{list}-{member} before {list}-{query}", "an unknown parameter, in another org", 403,
        NOT_A_MEMBER, org="other", query=FOO, difference=ORG_DIFFERS),
    Row("{list}-{role} before {list}-{query}", "an unknown parameter, without the role", 403,
        NOT_PROVIDER_ADMIN, token="tenant", query=FOO),
)  # fmt: skip

# The rack and tray lists check the query first, and Flow resolves the id last
# (get-rack-tasks, get-tray-tasks).
COMPONENT_ROWS = (
    Row("{list}-{query} before {list}-{member}", "an unknown parameter, in another org", 400,
        UNKNOWN_PARAMETER, org="other", query=FOO, difference=ORG_DIFFERS),
    Row("{list}-{site_id} before {list}-{role}", "no siteId, without the role", 400,
        SITE_ID_REQUIRED, token="tenant", site="missing"),
    Row("{list}-{no_site} before {list}-{found}",
        "a Site that does not exist, an id that names nothing",
        400, NO_SITE, site="unknown"),
)  # fmt: skip
MISSING_RACK = Row("{list}-{found}", "a rack id that names no rack", 404, NO_RACK,
                   difference=Difference(NO_RACK_DIFFERENCE, Answer(404)))  # fmt: skip
MISSING_TRAY = Row("{list}-{found}", "a tray id that names no tray", 404, NO_COMPONENT)

# Each list's steps, numbered as its table numbers them.
SITE_WIDE_STEPS = dict(
    member=2, role=3, query=4, bind=5, site_id=6, invalid_site=8, no_site=9, flow=12,
    paging_bind=13, paging=14, found=16, ok=18,
)  # fmt: skip
COMPONENT_STEPS = dict(
    query=1, bind=2, site_id=3, member=5, role=5, invalid_site=7, no_site=7, flow=8,
    paging_bind=9, paging=9, found=11, ok=13,
)  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """An operation under test: its path, whose {id} a row's record fills, and its rows."""

    operation_id: str
    method: str
    path: str
    rows: tuple[Row, ...]
    steps: dict[str, Any] = field(default_factory=dict)
    records: str = "task"  # task, rack or tray: what {id} names
    body: dict[str, Any] = field(default_factory=dict)  # fields every request sends
    made: str = ""  # an operation that creates tasks: their description ({id}: the path's)

    @property
    def creates(self) -> bool:
        return bool(self.made)


TASK_OPERATIONS = (
    Operation("get-task", "GET", "task/{id}", AUTH_ROWS + TASK_READ_ROWS),
    Operation("get-rack-task", "GET", "rack/task/{id}", AUTH_ROWS + TASK_READ_ROWS),
    Operation("cancel-task", "POST", "task/{id}/cancel",
              AUTH_ROWS + CANCEL_ROWS + CANCEL_WRITE_ROWS),
    Operation("cancel-rack-task", "POST", "rack/task/{id}/cancel", AUTH_ROWS + CANCEL_ROWS),
    Operation("get-all-tasks", "GET", "task", AUTH_ROWS + LIST_ROWS + SITE_WIDE_ROWS,
              steps=SITE_WIDE_STEPS),
    Operation("get-rack-tasks", "GET", "rack/{id}/task",
              AUTH_ROWS + LIST_ROWS + COMPONENT_ROWS + (MISSING_RACK,),
              steps=COMPONENT_STEPS, records="rack"),
    Operation("get-tray-tasks", "GET", "tray/{id}/task",
              AUTH_ROWS + LIST_ROWS + COMPONENT_ROWS + (MISSING_TRAY,),
              steps=COMPONENT_STEPS, records="tray"),
)  # fmt: skip


# The operations that create tasks: each request names either a random rack or tray that no
# record has, or (the one success row of each, and only with --allow-writes) the records the
# caller names; so a check that wrongly passes reaches Flow's "not found", never a task.
BUSY_RACK_DIFFERENCE = "a rack busy with a conflicting task, when a task is created"
FLOW_TEXT_DIFFERENCE = "Flow's error texts for the operations that create tasks"
BUSY_DIFFERS = Difference(BUSY_RACK_DIFFERENCE, Answer(500, "failed to create any tasks"))
FLOW_TEXT_DIFFERS = Difference(FLOW_TEXT_DIFFERENCE, Answer(404))
SITE_LOOKUP_FAILED = "Failed to retrieve Site due to DB error"
BATCH_INVALID = "Failed to validate request data"
INVALID_STATE = "must be one of [On Off Cycle ForceOff ForceCycle ACPowerCycle]"
UNKNOWN_AUTHENTICATION_FIELDS = 'authenticationData contains unknown fields: "aa", "zz"'
# A Site id no Site has, for the rows whose body spells siteId its own way.
NO_SUCH_SITE = "00000000-0000-0000-0000-000000000007"
# Flow's answers for a rack or tray that no record has ({id}: the one the request names).
NO_TARGET_RACK = (
    "failed to resolve rack target: failed to get rack by identifier "
    "{{ID:00000000-0000-0000-0000-000000000000 Name: ExternalID:{id}}}: "
    "rpc error: code = NotFound desc = rack with external id {id} is not found"
)
NO_TARGET_RACK_NAME = (
    "failed to resolve rack target: failed to get rack by identifier "
    "{{ID:00000000-0000-0000-0000-000000000000 Name:{id} ExternalID:}}: "
    "rpc error: code = NotFound desc = rack {id} is not found"
)
NO_TARGET_TRAY = (
    "failed to get component target external_id={id}: rpc error: code = NotFound "
    'desc = component identifier "{id}" not found'
)
# Each list's steps in the order production checks them: one rack or tray, or a batch.
SINGLE_CREATE_STEPS = dict(member=1, role=2, provider=3, bind=4, valid=5, site=6, flow=7, ok=8)
BATCH_CREATE_STEPS = dict(bind=1, valid=2, member=3, role=4, provider=5, site=6, flow=7, ok=8)


SINGLE_INVALID = {
    "power": "Failed to validate power control request data",
    "firmware": "Failed to validate firmware update request data",
    "bringup": "Failed to validate bring up request data",
}


def create_rows(operation_id: str, kind: str, rack: bool, batch: bool) -> tuple[Row, ...]:
    """The rows of a power, firmware or bring-up operation on one rack or tray, or a batch. A
    rack operation answers a Site id that is not a UUID as the Site check, a tray operation as
    its Site lookup's DB error; a batch power request without siteId names no field."""
    steps = BATCH_CREATE_STEPS if batch else SINGLE_CREATE_STEPS
    invalid = BATCH_INVALID if batch else SINGLE_INVALID[kind]
    no_site_id = {} if batch and kind == "power" else {"siteId": "siteId is required"}

    def n(*checks: str) -> str:
        return " before ".join(f"{operation_id}-{steps[check]}" for check in checks)

    not_uuid = (400, INVALID_SITE_ID) if rack else (500, SITE_LOOKUP_FAILED)
    missing = NO_TARGET_RACK_NAME if rack and batch else NO_TARGET_RACK if rack else NO_TARGET_TRAY
    bad_rule = {"ruleId": "must be a valid UUID"}
    rows = [
        Row(n("member"), "an org the caller is not a member of", 403, NOT_A_MEMBER,
            org="other", difference=ORG_DIFFERS),
        Row(n("role"), "a caller without the Provider Admin role", 403, NOT_PROVIDER_ADMIN,
            token="tenant"),
        Row(n("bind"), "a body that is not JSON", 400, UNREADABLE, body="{"),
        Row(n("bind"), "a siteId that is not a string", 400, UNREADABLE, body={"siteId": 5}),
        Row(n("valid"), "a body without siteId", 400, invalid, no_site_id, site="missing"),
        Row(n("valid"), "a ruleId that is not a UUID", 400, invalid, bad_rule,
            body={"ruleId": "not-a-rule"}),
        Row(n("site"), "a siteId that is not a UUID", *not_uuid, site="not a uuid"),
        Row(n("site"), "a Site that does not exist", 400, NO_SITE, site="unknown"),
        Row(n("flow"), f"a {'rack' if rack else 'tray'} that no record is", 404, missing,
            difference=FLOW_TEXT_DIFFERS),
        Row(n("ok"), "the records named for writes", 200, record="known", verify="made",
            difference=BUSY_DIFFERS),
        Row(n("valid", "site"), "a ruleId that is not a UUID, at a Site that does not exist",
            400, invalid, bad_rule, site="unknown", body={"ruleId": "not-a-rule"}),
        Row("body-1", "keys in another case (siteId as SiteId)", 400, NO_SITE, site="missing",
            body={"SiteId": NO_SUCH_SITE}),
        Row("body-2", "bytes after the JSON value", 400, NO_SITE, site="unknown",
            after=" {not json"),
    ]  # fmt: skip
    if kind == "power":
        rows.append(Row(n("valid"), "a state that is not a power state", 400, invalid,
                        {"state": INVALID_STATE}, body={"state": "Up"}))  # fmt: skip
    if not rack and batch:
        rows.append(Row(n("valid"), "a blank tray id in the filter", 400, invalid,
                        {"ids": {"0": "cannot be blank"}},
                        body={"filter": {"ids": [""]}}))  # fmt: skip
    if kind == "firmware":
        rows.append(Row("body-4", "unknown authenticationData fields after a value of the wrong "
                        "type", 400, UNKNOWN_AUTHENTICATION_FIELDS,
                        body='{"siteId":5,"authenticationData":{"zz":1,"aa":1}}'))  # fmt: skip
    if batch:
        rows += [
            Row(n("bind", "role"), "a body that is not JSON, without the role", 400,
                UNREADABLE, token="tenant", body="{"),
            Row(n("valid", "member"), "a ruleId that is not a UUID, in another org", 400,
                invalid, bad_rule, org="other", body={"ruleId": "not-a-rule"},
                difference=ORG_DIFFERS),
            Row(n("valid", "role"), "a ruleId that is not a UUID, without the role", 400,
                invalid, bad_rule, token="tenant", body={"ruleId": "not-a-rule"}),
        ]  # fmt: skip
    else:
        rows += [
            Row(n("member", "bind"), "a body that is not JSON, in another org", 403,
                NOT_A_MEMBER, org="other", body="{", difference=ORG_DIFFERS),
            Row(n("role", "bind"), "a body that is not JSON, without the role", 403,
                NOT_PROVIDER_ADMIN, token="tenant", body="{"),
            Row(n("role", "valid"), "a ruleId that is not a UUID, without the role", 403,
                NOT_PROVIDER_ADMIN, token="tenant", body={"ruleId": "not-a-rule"}),
        ]  # fmt: skip
    # In production's order: by the check that answers; the shared body rows last.
    return tuple(sorted(rows, key=lambda row: _step(row.row, operation_id)))


def _step(row_id: str, operation_id: str) -> tuple[int, int]:
    first = row_id.split(" ")[0]
    if first.startswith(f"{operation_id}-"):
        return 0, int(first.removeprefix(f"{operation_id}-"))
    return 1, int(first.removeprefix("body-"))


def create_operation(
    operation_id: str, method: str, path: str, made: str, body: dict[str, Any] | None = None
) -> Operation:
    kind = operation_id.split("-")[0]
    rack = path.startswith("rack/")
    batch = "{id}" not in path
    return Operation(
        operation_id,
        method,
        path,
        AUTH_ROWS + create_rows(operation_id, kind, rack, batch),
        records="rack" if rack else "tray",
        body=body or {},
        made=made,
    )


ON = {"state": "On"}
CREATE_OPERATIONS = (
    create_operation("power-control-racks", "PATCH", "rack/power", "API power on Rack", ON),
    create_operation("power-control-rack", "PATCH", "rack/{id}/power", "API power on Rack", ON),
    create_operation("firmware-update-racks", "PATCH", "rack/firmware",
                     "API firmware update Rack"),
    create_operation("firmware-update-rack", "PATCH", "rack/{id}/firmware",
                     "API firmware update Rack"),
    create_operation("bringup-racks", "POST", "rack/bringup", "API batch bring up Racks"),
    create_operation("bringup-rack", "POST", "rack/{id}/bringup", "API bring up Rack {id}"),
    create_operation("power-control-trays", "PATCH", "tray/power", "API power on Tray", ON),
    create_operation("power-control-tray", "PATCH", "tray/{id}/power", "API power on Tray", ON),
    create_operation("firmware-update-trays", "PATCH", "tray/firmware",
                     "API firmware update Tray"),
    create_operation("firmware-update-tray", "PATCH", "tray/{id}/firmware",
                     "API firmware update Tray"),
)  # fmt: skip
OPERATIONS = TASK_OPERATIONS + CREATE_OPERATIONS


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    authorization: str | None = None
    body: bytes | None = None
    # The header as a reproducing command shows it: tokens by name, never their value.
    shown: str | None = None

    def send(self, client: httpx.Client) -> Response:
        headers = {"Authorization": self.authorization} if self.authorization else {}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        url = self.path + _query_text(self.query)
        return Response.of(client.request(self.method, url, headers=headers, content=self.body))

    def curl(self, base_url: str) -> str:
        parts = [f"curl -X {self.method}"]
        if self.shown is not None:
            parts.append(f"-H 'Authorization: {self.shown}'")
        if self.body is not None:
            parts.append(f"-H 'Content-Type: application/json' -d '{self.body.decode()}'")
        parts.append(f"'{base_url}{self.path}{_query_text(self.query)}'")
        return " ".join(parts)


def _query_text(query: Sequence[tuple[str, str]]) -> str:
    return "?" + urlencode(query, quote_via=quote) if query else ""


@dataclass(frozen=True)
class Caller:
    """What the caller gives: its tokens and the records conformance knows (`known`); a check
    that needs more is reported as not run."""

    token: str
    known: KnownValues
    allow_writes: bool = False
    tenant_token: str | None = None
    other_org: str | None = None
    non_flow_site_id: str | None = None


@dataclass(frozen=True)
class Check:
    """A row made into a request for one caller; `needs` names what a check that cannot be
    made lacks."""

    operation: Operation
    row: Row
    request: Request | None
    expected: Answer
    record: str = ""
    needs: str = ""

    @property
    def name(self) -> str:
        operation_id = self.operation.operation_id
        number = self.row.row.format(list=operation_id, **self.operation.steps)
        if number.startswith(f"{operation_id}-"):
            return f"{number}: {self.row.condition}"
        return f"{number} ({operation_id}): {self.row.condition}"


class _Values:
    """One run's values: the caller's records, and random ids that no record has."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.unknown_task = str(uuid.uuid4())
        self.unknown_site = str(uuid.uuid4())
        self.unknown_component = f"unknown-{self.unknown_task[:8]}"

    def token(self, which: str) -> tuple[str | None, str | None, str]:
        """The Authorization header as sent and as shown, or what it needs."""
        if which == "none":
            return None, None, ""
        if which == "tenant" and not self.caller.tenant_token:
            return None, None, "--tenant-token"
        token, name = {
            "admin": (self.caller.token, "$TOKEN"),
            "tenant": (self.caller.tenant_token, "$TENANT_TOKEN"),
            "not bearer": (self.caller.token, "$TOKEN"),
            "not a token": ("not-a-token", "not-a-token"),
        }[which]
        scheme = "Token" if which == "not bearer" else "Bearer"
        return f"{scheme} {token}", f"{scheme} {name}", ""

    def org(self, which: str) -> tuple[str, str]:
        org = {
            "caller": self.caller.known.org or "",
            "other": self.caller.other_org or "",
            "upper": (self.caller.known.org or "").upper(),
        }[which]
        return org, "" if org else ("--other-org" if which == "other" else "--org")

    def site(self, which: str) -> tuple[str | None, str]:
        site = {
            "known": self.caller.known.site_id,
            "missing": None,
            "empty": "",
            "not a uuid": "not-a-site-id",
            "unknown": self.unknown_site,
            "non-flow": self.caller.non_flow_site_id,
        }[which]
        return site, "--non-flow-site-id" if which == "non-flow" and not site else ""

    def record(self, kind: str, which: str) -> tuple[str, str]:
        c = self.caller.known
        if which == "unknown":
            return (self.unknown_task if kind == "task" else self.unknown_component), ""
        if which == "not a uuid":
            return "not-a-task-id", ""
        if which == "cancel":
            if not c.cancel_task_ids:
                return "", "--cancel-task-id"
            return c.cancel_task_ids[0], "" if self.caller.allow_writes else "--allow-writes"
        known = {"task": c.task_ids, "rack": c.rack_ids, "tray": c.tray_ids}[kind]
        if not known:
            return "", f"--{kind}-id"
        return (f"urn:uuid:{known[0]}" if which == "urn" else known[0]), ""

    def batch_filter(self, kind: str, which: str) -> tuple[dict[str, Any], str]:
        """A batch's filter: the racks or trays named for writes, else a record no one has
        (without a filter a batch acts on every rack or tray of the Site)."""
        c = self.caller.known
        if which != "known":
            return {"names" if kind == "rack" else "ids": [self.unknown_component]}, ""
        if kind == "rack":
            return ({"names": list(c.rack_names)}, "") if c.rack_names else ({}, "--rack-name")
        if c.tray_ids:
            return {"ids": list(c.tray_ids)}, ""
        return ({"rackId": c.rack_ids[0]}, "") if c.rack_ids else ({}, "--tray-id")


def checks(caller: Caller) -> list[Check]:
    values = _Values(caller)
    return [_check(values, operation, row) for operation in OPERATIONS for row in operation.rows]


def _check(values: _Values, operation: Operation, row: Row) -> Check:
    authorization, shown, need_token = values.token(row.token)
    org, need_org = values.org(row.org)
    site, need_site = values.site(row.site)
    record, need_record = values.record(operation.records, row.record)
    # A list's {id} only matters to the rows that reach the rack or tray, or succeed.
    if "{id}" not in operation.path or row.record == "unknown":
        need_record = ""
    message = row.message
    if message is not ANY:
        message = message.format(org=org.lower(), id=record)
    expected = Answer(row.status, message, row.data if message is not ANY else ANY)
    path = f"/v2/org/{quote(org, safe='')}/nico/" + operation.path.replace("{id}", record)
    query: tuple[tuple[str, str], ...] = row.query
    body = None
    fields = {} if site is None else {"siteId": site}
    need_writes = ""
    if operation.creates:
        # Requests that may create tasks are sent only when writes are allowed.
        need_writes = "" if values.caller.allow_writes else "--allow-writes"
        fields.update(operation.body)
        if "{id}" not in operation.path:
            fields["filter"], need_record = values.batch_filter(operation.records, row.record)
    if operation.method == "GET":
        query = ((("siteId", site),) if site is not None else ()) + row.query
    elif isinstance(row.body, str):
        body = row.body.encode()
    else:
        body = (json.dumps({**fields, **(row.body or {})}) + row.after).encode()
    needs = need_writes or need_token or need_org or need_site or need_record
    request = None
    if not needs:
        request = Request(operation.method, path, query, authorization, body, shown)
    return Check(operation, row, request, expected, record, needs)


def _cancel_answer(client: httpx.Client, check: Check, caller: Caller) -> Answer | Response:
    """Flow's answer by the task's state, read just before (a finished task is not cancelled);
    or the read's answer when the task could not be read."""
    assert check.request is not None
    site = (("siteId", caller.known.site_id or ""),)
    read = replace(check.request, method="GET", query=site, body=None)
    read = replace(read, path=read.path.removesuffix("/cancel")).send(client)
    if read.status != 200 or not isinstance(read.body, dict):
        return read
    finished = {"Succeeded": "completed", "Failed": "failed"}.get(read.body.get("status"))
    if finished:
        return Answer(412, NOT_CANCELLABLE.format(check.record, finished), None)
    return check.expected


def _verify(check: Check, response: Response) -> str | None:
    """The further checks of a success: the task named, or a page as its query asks."""
    body = response.body
    if check.row.verify in ("task", "cancelled"):
        task = check.record.removeprefix("urn:uuid:")
        if not isinstance(body, dict) or body.get("id") != task:
            return f"the task's id is not {task}"
        if check.row.verify == "cancelled" and body.get("status") != "Terminated":
            return f"the cancelled task's status is {body.get('status')!r}, not 'Terminated'"
    if check.row.verify == "page":
        query = dict(check.row.query)
        size = int(query.get("pageSize", "0")) or 20
        try:
            header = json.loads(response.headers.get("X-Pagination", ""))
        except ValueError:
            header = None
        if not isinstance(header, dict):
            return "no X-Pagination header of a JSON object"
        want = {"pageNumber": 1, "pageSize": size, "orderBy": None}
        if {k: header.get(k) for k in want} != want or not isinstance(header.get("total"), int):
            return f"X-Pagination is {json.dumps(header)}, not {json.dumps(want)} with a total"
        if not isinstance(body, list) or len(body) > size or not all(map(_is_object, body)):
            return f"the body is not a list of at most {size} tasks"
        if any("report" in task for task in body):
            return "a task has a report, which only includeReport=true asks for"
        statuses = {task.get("status") for task in body}
        if "activeOnly" in query and statuses - {"Pending", "Running"}:
            return f"activeOnly=1 listed tasks that are {sorted(statuses)}"
    return None


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


@dataclass(frozen=True)
class Outcome:
    check: Check
    verdict: str  # pass, fail, known difference, not run
    expected: str = ""
    got: str = ""
    curl: str = ""


@dataclass
class ContractReport:
    target: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(o.verdict == "fail" for o in self.outcomes)

    def summary(self) -> str:
        counts = Counter(o.verdict for o in self.outcomes)
        needed = Counter(o.check.needs for o in self.outcomes if o.verdict == "not run")
        lines = [
            f"Contract checks (docs/contract.md), as {self.target} answers them",
            f"  checks:     {len(self.outcomes)} ({counts['pass']} passed, {counts['fail']} "
            f"failed, {counts['known difference']} known differences, {counts['not run']} "
            "not run)",
            *(f"  not run:    {n} need {option}" for option, n in sorted(needed.items())),
            "",
        ]
        for outcome in self.outcomes:
            if outcome.verdict == "not run":
                continue
            lines.append(f"{outcome.verdict}: {outcome.check.name}")
            lines.append(f"    expected: {outcome.expected}")
            if outcome.verdict != "pass":
                lines.append(f"    got:      {outcome.got}")
                lines.append(f"    reproduce: {outcome.curl}")
            if outcome.verdict == "known difference":
                where = outcome.check.row.difference.where
                lines.append(f"    difference (docs/differences.md): {where}")
        return "\n".join(lines)

    def junit(self) -> ElementTree.Element:
        suite = ElementTree.Element(
            "testsuite",
            name="nico-contract",
            tests=str(len(self.outcomes)),
            failures=str(sum(o.verdict == "fail" for o in self.outcomes)),
            skipped=str(sum(o.verdict in ("not run", "known difference") for o in self.outcomes)),
        )
        for outcome in self.outcomes:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=outcome.check.operation.operation_id,
                name=outcome.check.name,
            )
            told = f"expected: {outcome.expected}\ngot: {outcome.got}\n{outcome.curl}"
            if outcome.verdict == "fail":
                failure = ElementTree.SubElement(
                    case, "failure", type="contract", message=f"expected {outcome.expected}"
                )
                failure.text = told
            elif outcome.verdict == "not run":
                ElementTree.SubElement(case, "skipped", message=f"needs {outcome.check.needs}")
            elif outcome.verdict == "known difference":
                where = outcome.check.row.difference.where
                skipped = ElementTree.SubElement(
                    case, "skipped", message=f"known difference: {where}"
                )
                skipped.text = told
            else:
                ElementTree.SubElement(case, "system-out").text = told
        return suite


def run(client: httpx.Client, caller: Caller, target: str = TARGETS[0]) -> ContractReport:
    """Every check against the server `client` talks to; with target production, the rows of
    docs/differences.md are known answers, not failures."""
    report = ContractReport(target)
    for check in checks(caller):
        report.outcomes.append(_outcome(client, check, caller, target))
    return report


def _outcome(client: httpx.Client, check: Check, caller: Caller, target: str) -> Outcome:
    if check.request is None:
        return Outcome(check, "not run")
    curl = check.request.curl(str(client.base_url).rstrip("/"))
    expected = check.expected
    if check.row.record == "cancel":
        expected = _cancel_answer(client, check, caller)
        if isinstance(expected, Response):
            return Outcome(
                check, "fail", "the task readable before its cancel", str(expected), curl
            )
    response = check.request.send(client)
    answered = expected.given_by(response)
    problem = _verify(check, response) if answered and expected.status < 400 else None
    if answered and problem is None and check.row.verify == "made":
        problem = _made(client, check, caller, response)
    difference = check.row.difference
    if answered and problem is None:
        verdict = "pass"
    elif target == "production" and difference and difference.production.given_by(response):
        verdict = "known difference"
    else:
        verdict = "fail"
    got = f"{response}; {problem}" if problem else str(response)
    return Outcome(check, verdict, str(expected), got, curl)


def _made(client: httpx.Client, check: Check, caller: Caller, response: Response) -> str | None:
    """A create's success: one task per rack (one for a single rack or tray), each readable at
    the Site with the operation's description."""
    assert check.request is not None
    body = response.body
    ids = body.get("taskIds") if isinstance(body, dict) and set(body) == {"taskIds"} else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return 'the body is not {"taskIds": [...]} naming at least one task'
    if "{id}" in check.operation.path and len(ids) != 1:
        return f"{len(ids)} tasks made for one {check.operation.records}"
    description = check.operation.made.format(id=check.record)
    org = check.request.path.split("/")[3]
    for task_id in ids:
        read = Request("GET", f"/v2/org/{org}/nico/task/{quote(task_id, safe='')}",
                       (("siteId", caller.known.site_id or ""),),
                       check.request.authorization).send(client)  # fmt: skip
        if read.status != 200 or not isinstance(read.body, dict):
            return f"task {task_id} cannot be read: {read}"
        if read.body.get("description") != description:
            return f"task {task_id}'s description is {read.body.get('description')!r}"
    return None
