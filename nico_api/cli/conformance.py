"""Conformance to openapi.yaml: generated requests against a running implementation (or an ASGI
app), every response checked against the spec by schemathesis."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import APIOperation, BaseSchema

from nico_api.config import SPEC_PATH
from nico_api.web.validation import go_value

CONFIG_PATH = SPEC_PATH.with_name("schemathesis.toml")


@dataclass(frozen=True)
class KnownValues:
    """Values of real records, so that success paths are exercised, not only errors."""

    org: str | None = None
    site_id: str | None = None
    task_ids: Sequence[str] = ()
    rack_ids: Sequence[str] = ()
    tray_ids: Sequence[str] = ()
    rack_names: Sequence[str] = ()
    # The only tasks a run that may write cancels (never the tasks it reads).
    cancel_task_ids: Sequence[str] = ()

    def aim(self, operation: APIOperation) -> Aim | str:
        """For an operation that changes records: how every request it sends is pointed at
        the records named on the command line; or, when none is named, what it needs."""
        path = operation.path
        if "{id}" in path:
            ids, option = self._ids_of(path)
            return Aim(ids=ids) if ids else option
        if "/rack/" in path:
            return (
                Aim(filter={"names": list(self.rack_names)}) if self.rack_names else "--rack-name"
            )
        if "/tray/" not in path:
            return "a way to name its records (this run knows none)"
        if self.tray_ids:
            return Aim(filter={"ids": list(self.tray_ids)})
        return Aim(filter={"rackId": self.rack_ids[0]}) if self.rack_ids else "--tray-id"

    def _ids_of(self, path: str) -> tuple[Sequence[str], str]:
        """The records a path's `id` may name, and the option that names them."""
        if path.endswith("/cancel"):
            return self.cancel_task_ids, "--cancel-task-id"
        if "/rack/{id}" in path:
            return self.rack_ids, "--rack-id"
        if "/tray/{id}" in path:
            return self.tray_ids, "--tray-id"
        return self.task_ids, "--task-id"

    def for_operation(self, operation: APIOperation) -> list[dict[str, Any]]:
        """Keyword arguments for as_strategy that name real records of this operation."""
        path_names = {p.name for p in operation.path_parameters}
        query_names = {p.name for p in operation.query}
        fixed: dict[str, Any] = {}
        if "org" in path_names and self.org:
            fixed["path_parameters"] = {"org": self.org}
        if "siteId" in query_names and self.site_id:
            fixed["query"] = {"siteId": self.site_id}
        if operation.body and self.site_id:
            fixed["body"] = _least_body(operation, self.site_id)
        if "id" in path_names:
            ids, _option = self._ids_of(operation.path)
            return [
                {**fixed, "path_parameters": {**fixed.get("path_parameters", {}), "id": known}}
                for known in ids
            ]
        return [fixed] if fixed else []


@dataclass(frozen=True)
class Aim:
    """The records a request that changes them may name: path ids, or a batch filter."""

    ids: Sequence[str] = ()
    filter: dict[str, Any] | None = None

    def __call__(self, case: schemathesis.Case) -> schemathesis.Case:
        if self.ids and case.path_parameters and case.path_parameters.get("id") not in self.ids:
            case.path_parameters["id"] = self.ids[0]
        if self.filter is not None and isinstance(case.body, dict):
            # Without a filter a batch acts on every rack or tray of the Site.
            case.body["filter"] = dict(self.filter)
        return case

    def invalid(self, case: schemathesis.Case) -> schemathesis.Case:
        """An invalid request keeps an id that names no record (not a UUID), for the server to
        refuse; any other id is pointed at a named record: an invalid body or header alone may
        be one that production reads as valid, and the spec's examples name real tasks."""
        if case.path_parameters and _is_uuid(case.path_parameters.get("id")):
            return self(case)
        return case


def _least_body(operation: APIOperation, site_id: str) -> dict[str, Any]:
    """The body with only its required fields: the Site, and the first value of each enum."""
    schema = operation.body[0].resolved_schema
    bundled = schema.get("x-bundled", {})
    body: dict[str, Any] = {}
    for name in schema.get("required", []):
        field = schema["properties"][name]
        while "enum" not in field and name != "siteId":
            field = field["anyOf"][0] if "anyOf" in field else field
            field = bundled.get(field.get("$ref", "").rpartition("/")[2], field)
        body[name] = site_id if name == "siteId" else field["enum"][0]
    return body


READ_ONLY = "cancel, and those that act on racks and trays; --allow-writes runs them"


def writes(operation: APIOperation) -> bool:
    """An operation that changes the target's records: a cancel, or one that makes NICo Flow
    act on racks or trays."""
    return operation.method.upper() not in ("GET", "HEAD", "OPTIONS")


@dataclass
class FailureExample:
    operation: str
    code: str
    title: str
    message: str
    status: int | None
    curl: str
    count: int = 1


@dataclass
class Report:
    target: str
    operations: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: dict[tuple[str, str], FailureExample] = field(default_factory=dict)
    # Operations left out, and why: the records they would change were not named.
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> bool:
        return not self.failures and self.requests > 0

    def count(self, status: int, operation: str | None = None) -> int:
        return sum(
            n
            for (op, code), n in self.statuses.items()
            if code == status and operation in (None, op)
        )

    def record(self, operation: str, failure: Failure, status: int | None, curl: str) -> None:
        key = (operation, failure.code)
        if key in self.failures:
            self.failures[key].count += 1
        else:
            self.failures[key] = FailureExample(
                operation, failure.code, failure.title, failure.message, status, curl
            )

    def summary(self) -> str:
        by_status = ", ".join(
            f"{status}: {n}" for status, n in sorted(_by_status(self.statuses).items())
        )
        lines = [
            f"Conformance of {self.target} to openapi.yaml",
            f"  operations: {len(self.operations)}",
            f"  requests:   {self.requests} ({by_status or 'none'})",
            f"  failures:   {sum(f.count for f in self.failures.values())}",
        ]
        for reason, n in sorted(Counter(self.skipped.values()).items()):
            lines.append(f"  skipped:    {n} operations that change records ({reason})")
        for example in self.failures.values():
            lines += [
                "",
                f"{example.code} {example.title}: {example.operation} ({example.count}x)",
                *(f"    {line}" for line in example.message.splitlines() if line.strip()),
                f"    status: {example.status}",
                f"    reproduce: {example.curl}",
            ]
        lines.append("")
        lines.append("PASSED" if self.ok else "FAILED")
        return "\n".join(lines)

    def junit(self) -> ElementTree.Element:
        suite = ElementTree.Element(
            "testsuite",
            name="nico-conformance",
            tests=str(len(self.operations)),
            failures=str(len({op for op, _ in self.failures})),
        )
        for operation in self.operations:
            case = ElementTree.SubElement(
                suite, "testcase", classname="conformance", name=operation
            )
            for example in (f for (op, _), f in self.failures.items() if op == operation):
                failure = ElementTree.SubElement(
                    case, "failure", type=example.code, message=example.title
                )
                failure.text = f"{example.message}\n\nReproduce with:\n{example.curl}"
            requests = sum(n for (op, _), n in self.statuses.items() if op == operation)
            ElementTree.SubElement(case, "system-out").text = f"{requests} requests"
        return suite


def _by_status(statuses: Counter[tuple[str, int]]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for (_, status), n in statuses.items():
        counts[status] += n
    return counts


def load_schema(app: Any = None, base_url: str | None = None, spec: Path = SPEC_PATH) -> BaseSchema:
    config = SchemathesisConfig.from_path(CONFIG_PATH)
    if app is not None:
        return schemathesis.openapi.from_asgi("/v2/openapi.yaml", app, config=config)
    schema = schemathesis.openapi.from_path(spec, config=config)
    if base_url is not None:
        schema.config.update(base_url=base_url)
    return schema


def run(
    schema: BaseSchema,
    *,
    headers: Mapping[str, str],
    known: KnownValues,
    max_examples: int = 100,
    target: str = "the app",
    progress: Callable[[str], None] = lambda _line: None,
    only: Collection[str] | None = None,
    allow_writes: bool = False,
    confine_writes: bool = True,
) -> Report:
    """Exercise every operation of `schema` (or those labelled in `only`) against its target;
    the operations that change records (cancel, and those that make Flow act on racks and
    trays) only when writes are allowed, and then only on the records `known` names, unless
    the target's records are all the run's to change (`confine_writes=False`: a test's own)."""
    report = Report(target=target)
    for result in schema.get_all_operations():
        operation = result.ok()
        if only is not None and operation.label not in only:
            continue
        aim = None
        if writes(operation):
            if not allow_writes:
                report.skipped[operation.label] = READ_ONLY
                continue
            aim = known.aim(operation) if confine_writes else None
            if isinstance(aim, str):
                report.skipped[operation.label] = f"no record named to change: {aim}"
                continue
        report.operations.append(operation.label)
        progress(f"{operation.label} ...")
        _exercise(operation, dict(headers), known, max_examples, report, aim)
        sent = sum(n for (op, _), n in report.statuses.items() if op == operation.label)
        failed = sum(1 for op, _ in report.failures if op == operation.label)
        progress(f"{operation.label}: {sent} requests, {failed} kinds of failure")
    return report


def _exercise(
    operation: APIOperation,
    headers: dict[str, str],
    known: KnownValues,
    max_examples: int,
    report: Report,
    aim: Aim | None,
) -> None:
    # Generated valid and invalid requests, and requests that name real records.
    valid = [
        operation.as_strategy(GenerationMode.POSITIVE),
        *(operation.as_strategy(**fixed) for fixed in known.for_operation(operation)),
    ]
    invalid = operation.as_strategy(GenerationMode.NEGATIVE).filter(
        lambda case: not _valid_as_production_reads_it(case)
    )
    if aim is None:
        strategies = [*valid, invalid]
    else:
        # Invalid requests only to cancel: one wrongly taken would act on racks.
        strategies = [strategy.map(aim) for strategy in valid]
        if operation.path.endswith("/cancel"):
            strategies.append(invalid.map(aim.invalid))

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        report.statuses[(operation.label, response.status_code)] += 1
        try:
            case.validate_response(response, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                report.record(operation.label, failure, response.status_code, _curl(case))
        except Failure as failure:
            report.record(operation.label, failure, response.status_code, _curl(case))
        if _crashed(response):
            crash = Crash(operation.label)
            report.record(operation.label, crash, response.status_code, _curl(case))

    check()


class Crash(Failure):
    """A 500 that is not one of the contract's answers: the server failed on its own."""

    code = "NICO500"

    def __init__(self, operation: str) -> None:
        super().__init__(
            operation=operation,
            title="Unexpected server error",
            message="500 Internal server error: no answer of the contract, the server failed",
        )


def _crashed(response: Any) -> bool:
    """The envelope a NICo server sends when a request fails with no answer of the contract
    (whereas a 500 with Flow's words, such as `failed to create any tasks`, is an answer)."""
    if response.status_code != 500:
        return False
    try:
        return response.json().get("message") == "Internal server error"
    except ValueError:
        return True


def _valid_as_production_reads_it(case: schemathesis.Case) -> bool:
    """A generated "invalid" query that production reads as valid, as Go's binder reads values
    (`activeOnly=1`, `pageSize=+5`, an empty value as zero): no negative case for a NICo server."""
    query = case.query or {}
    if not query or set(query) - {p.name for p in case.operation.query}:
        return False
    for param in case.operation.query:
        if param.name not in query:
            continue
        value = query[param.name]
        if isinstance(value, bool):
            value = str(value).lower()
        if not isinstance(value, str | int):
            return False
        schema = param.definition["schema"]
        try:
            read = go_value(str(value), schema.get("type"))
        except ValueError:
            return False
        if not Draft4Validator(schema).is_valid(read):
            return False
    return True


def _curl(case: schemathesis.Case) -> str:
    return case.as_curl_command(headers={"Authorization": "Bearer $TOKEN"})


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
