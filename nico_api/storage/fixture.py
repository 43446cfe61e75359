"""The fixture file format: providers, sites, each site's inventory (racks and their trays) and
operation rules, and tasks as Flow stores them, loaded whole."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from nico_api.config import InvalidInputError, document_problems, storable
from nico_api.flow.inventory import mac_address
from nico_api.flow.operations import OPERATIONS
from nico_api.storage import db, models
from nico_api.storage.db import Storage
from nico_api.vocabulary import COMPONENT_TYPES, STATUSES
from nico_api.wire.schemas import UTCTime

Name = Annotated[str, Field(min_length=1, max_length=256)]
FlowStatus = Literal[STATUSES]  # type: ignore[valid-type]
ComponentType = Literal[COMPONENT_TYPES]  # type: ignore[valid-type]
Operation = Literal[OPERATIONS]  # type: ignore[valid-type]


class FixtureError(InvalidInputError):
    """The file cannot be loaded; nothing from it was written."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    defaulted_times: ClassVar[frozenset[str]] = frozenset()

    def columns(self) -> dict[str, Any]:
        # Unset timestamps are left out, so a reload keeps the stored ones and a new row gets now.
        return {k: v for k, v in self if v is not None or k not in self.defaulted_times}


class ProviderRecord(_Record):
    defaulted_times = frozenset({"created", "updated"})

    id: uuid.UUID
    org: Name
    name: Name
    created: UTCTime | None = None
    updated: UTCTime | None = None


class SiteRecord(_Record):
    defaulted_times = frozenset({"created", "updated"})

    id: uuid.UUID
    name: Name
    infrastructure_provider_id: uuid.UUID
    flow_enabled: bool = False
    created: UTCTime | None = None
    updated: UTCTime | None = None


class RackRecord(_Record):
    defaulted_times = frozenset({"created", "updated"})

    id: uuid.UUID
    site_id: uuid.UUID
    external_id: Name = Field(description="the id production's REST API names the rack by")
    name: Name
    failure: str | None = Field(default=None, description="the simulated Flow fails its tasks")
    created: UTCTime | None = None
    updated: UTCTime | None = None


def _mac(value: str | None) -> str | None:
    if value is None:
        return None
    mac = mac_address(value)
    if mac is None:
        raise ValueError("a MAC address is six two-digit hex numbers, such as 02:00:5e:10:00:01")
    return mac


class TrayRecord(_Record):
    defaulted_times = frozenset({"created", "updated"})

    id: uuid.UUID
    rack_id: uuid.UUID
    external_id: Name = Field(description="the component id production's REST API names it by")
    bmc_mac: Annotated[str | None, AfterValidator(_mac)] = None
    type: ComponentType
    slot: int = Field(ge=0, le=2**31 - 1)
    failure: str | None = Field(default=None, description="the simulated Flow fails its step")
    created: UTCTime | None = None
    updated: UTCTime | None = None


class RuleStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    component_type: ComponentType


class RuleStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1, le=2**31 - 1)
    steps: list[RuleStep] = Field(min_length=1)


class RuleRecord(_Record):
    defaulted_times = frozenset({"created", "updated"})

    id: uuid.UUID
    site_id: uuid.UUID
    name: Name
    operation: Operation
    is_default: bool = Field(default=False, alias="default")
    stages: list[RuleStage]
    created: UTCTime | None = None
    updated: UTCTime | None = None

    @model_validator(mode="after")
    def _numbered_once(self) -> RuleRecord:
        numbers = [stage.number for stage in self.stages]
        if len(set(numbers)) != len(numbers):
            raise ValueError("each stage number is given once")
        return self

    def columns(self) -> dict[str, Any]:
        values = super().columns()
        values["stages"] = [stage.model_dump() for stage in self.stages]
        return values


class TaskRecord(_Record):
    defaulted_times = frozenset({"created_at", "updated_at"})

    id: uuid.UUID
    site_id: uuid.UUID
    rack_id: uuid.UUID | None = None
    description: str = ""
    message: str = ""
    status: FlowStatus
    applied_rule_id: uuid.UUID | None = None
    report: Any = Field(default=None, description="Flow's report document, stored as given")
    report_raw: str | None = Field(default=None, description="report text stored as-is")
    tray_ids: list[uuid.UUID] = Field(default=[], description="components the task targets")
    created_at: UTCTime | None = None
    updated_at: UTCTime | None = None
    started_at: UTCTime | None = None
    finished_at: UTCTime | None = None

    @model_validator(mode="after")
    def _one_report(self) -> TaskRecord:
        if self.report is not None and self.report_raw is not None:
            raise ValueError("give either report or report_raw, not both")
        return self

    def columns(self) -> dict[str, Any]:
        values = super().columns()
        raw = values.pop("report_raw")
        values.pop("tray_ids")
        if raw is not None:
            values["report"] = raw
        return values


class FixtureFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderRecord] = []
    sites: list[SiteRecord] = []
    racks: list[RackRecord] = []
    trays: list[TrayRecord] = []
    rules: list[RuleRecord] = []
    tasks: list[TaskRecord] = []


# What a file holds, in the order it is written.
KINDS = ("providers", "sites", "racks", "trays", "rules", "tasks")


@dataclass(frozen=True)
class LoadSummary:
    providers: int
    sites: int
    tasks: int
    racks: int = 0
    trays: int = 0
    rules: int = 0

    def __str__(self) -> str:
        text = f"{self.providers} providers, {self.sites} sites, {self.tasks} tasks"
        if self.racks or self.trays or self.rules:
            text += f", {self.racks} racks, {self.trays} trays, {self.rules} rules"
        return text


class _TextTimestampLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: report times stay RFC 3339 text, as Flow stores them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A key given twice is refused, rather than the last silently winning.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges a mapping in; it is not a key
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TextTimestampLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Reports are JSON documents: nothing deeper is stored.
MAX_DEPTH = 64
# The largest file read, in bytes (UTF-8): a fixture is data for a test or a demo.
MAX_DOCUMENT_BYTES = 64 << 20
# How many values aliases (`*anchor`, `<<: *anchor`) may add to the document as written: enough
# for shared reports and merged defaults, far below what a nest of aliases (a "billion laughs")
# would expand to.
MAX_ALIASED_VALUES = 100_000


def parse(text: str, source: str = "fixture") -> FixtureFile:
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise FixtureError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
    loader = _TextTimestampLoader(text)  # a SafeLoader subclass
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, source)
        document = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise FixtureError(f"{source}: not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise FixtureError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise FixtureError(
            f"{source}: the top level must be a mapping of {', '.join(KINDS[:-1])} and tasks"
        )
    _check_values(document, source)
    try:
        fixture = FixtureFile.model_validate(document)
    except ValidationError as exc:
        raise FixtureError(f"{source}: {document_problems(exc, document, label='id')}") from None
    for kind in KINDS:
        first: dict[uuid.UUID, int] = {}
        for i, record in enumerate(getattr(fixture, kind)):
            if record.id in first:
                raise FixtureError(
                    f"{source}: {kind}[{i}] (id {record.id}): the id is given twice "
                    f"(first at {kind}[{first[record.id]}])"
                )
            first[record.id] = i
    return fixture


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases would expand it by more than MAX_ALIASED_VALUES values,
    or that contains itself, before any of it is built: each node's expanded size is counted
    once, so a nest of aliases is measured in as many steps as it has nodes."""
    sizes: dict[int, int] = {}
    written = 0
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise FixtureError(f"{source}: an alias refers to the value that contains it")
        open_nodes.add(key)
        written += 1
        pending.append((node, True))
        pending.extend((child, False) for child in _children(node) if id(child) not in sizes)
    if sizes[id(root)] - written > MAX_ALIASED_VALUES:
        raise FixtureError(
            f"{source}: its aliases expand it by more than {MAX_ALIASED_VALUES} values "
            f"(to {sizes[id(root)]} values from {written} written)"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_values(document: dict[str, Any], source: str) -> None:
    """Every value is one both backends store as it is: JSON's kinds of value, text without a
    NUL or a lone surrogate, nested at most MAX_DEPTH deep."""
    pending: list[tuple[str, Any, int]] = [(name, value, 1) for name, value in document.items()]
    while pending:
        where, value, depth = pending.pop()
        problem = None
        if depth > MAX_DEPTH:
            problem = f"nested more than {MAX_DEPTH} deep"
        elif isinstance(value, str):
            if not storable(value):
                problem = "text with a NUL or a lone surrogate, which PostgreSQL cannot store"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or not storable(key):
                    problem = f"the key {key!r} is not storable text"
                    break
                pending.append((f"{where}.{key}", item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problem = f"{value} is not a JSON number"
        elif not isinstance(value, int | float | bool) and value is not None:
            problem = f"a value of kind {type(value).__name__}, which is not JSON"
        if problem:
            raise FixtureError(f"{source}: {_named(where, document)}: {problem}")


def _named(where: str, document: dict[str, Any]) -> str:
    """`tasks[3].report.x` as `tasks[3] (id 1f0c...) field 'report.x'`, as validation names it."""
    head, _, field = where.partition("].")
    kind, _, index = head.partition("[")
    records = document.get(kind)
    if not field or not isinstance(records, list) or not index.isdigit():
        return where
    record = records[int(index)]
    label = f" (id {record.get('id')})" if isinstance(record, dict) and record.get("id") else ""
    return f"{kind}[{index}]{label} field '{field}'"


def load(storage: Storage, fixture: FixtureFile) -> LoadSummary:
    """Write every record in one transaction, inserting or replacing by id."""
    with storage.transaction() as session:
        # A load of any size runs to its end: the per-request statement limit is not for it.
        db.without_statement_limit(session.connection())
        _check_references(session, fixture)
        for records, model in (
            (fixture.providers, models.InfrastructureProvider),
            (fixture.sites, models.Site),
            (fixture.racks, models.Rack),
            (fixture.trays, models.Tray),
            (fixture.rules, models.OperationRule),
            (fixture.tasks, models.Task),
        ):
            for record in records:
                session.merge(model(**record.columns()))
            session.flush()
        # A task's targets become the file's. Unchanged ones are left alone: a change locks the
        # task (its counts are being moved), and a reload should not hold up a cancel.
        targets = models.TaskComponent.__table__
        for task in fixture.tasks:
            stored = set(
                session.scalars(select(targets.c.component_id).where(targets.c.task_id == task.id))
            )
            wanted = set(task.tray_ids)
            if stored - wanted:
                session.execute(
                    delete(targets).where(
                        targets.c.task_id == task.id,
                        targets.c.component_id.in_(stored - wanted),
                    )
                )
            if wanted - stored:
                session.execute(
                    insert(targets),
                    [{"task_id": task.id, "component_id": tray} for tray in wanted - stored],
                )
    return LoadSummary(
        len(fixture.providers),
        len(fixture.sites),
        len(fixture.tasks),
        len(fixture.racks),
        len(fixture.trays),
        len(fixture.rules),
    )


def _check_references(session: Session, fixture: FixtureFile) -> None:
    owners: dict[str, uuid.UUID] = {}
    for i, provider in enumerate(fixture.providers):
        owner = owners.get(provider.org) or session.scalar(
            select(models.InfrastructureProvider.id).where(
                models.InfrastructureProvider.org == provider.org
            )
        )
        if owner is not None and owner != provider.id:
            raise FixtureError(
                f"providers[{i}] (id {provider.id}) field 'org': "
                f"org {provider.org!r} already has provider {owner}"
            )
        owners[provider.org] = provider.id
    provider_ids = {p.id for p in fixture.providers}
    for i, site in enumerate(fixture.sites):
        ref = site.infrastructure_provider_id
        if ref not in provider_ids and session.get(models.InfrastructureProvider, ref) is None:
            raise FixtureError(
                f"sites[{i}] (id {site.id}) field 'infrastructure_provider_id': no provider {ref}"
            )
    site_ids = {s.id for s in fixture.sites}
    for kind in ("racks", "rules", "tasks"):
        for i, record in enumerate(getattr(fixture, kind)):
            if record.site_id not in site_ids and session.get(models.Site, record.site_id) is None:
                raise FixtureError(
                    f"{kind}[{i}] (id {record.id}) field 'site_id': no site {record.site_id}"
                )
    rack_ids = {r.id for r in fixture.racks}
    for i, tray in enumerate(fixture.trays):
        if tray.rack_id not in rack_ids and session.get(models.Rack, tray.rack_id) is None:
            raise FixtureError(f"trays[{i}] (id {tray.id}) field 'rack_id': no rack {tray.rack_id}")


def load_file(storage: Storage, path: Path) -> LoadSummary:
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise FixtureError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(f"{path}: cannot read: {exc}") from None
    return load(storage, parse(text, str(path)))


def demo() -> FixtureFile:
    return parse(resources.files("nico_api.storage").joinpath("demo.yaml").read_text(), "demo data")
