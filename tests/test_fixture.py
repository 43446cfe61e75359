"""Loading fixture files: idempotent by id, and all or nothing."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, select

from nico_api.storage import fixture, models
from nico_api.storage.db import Storage
from tests.demo import ACME_SITE, GLOBEX, PENDING_TASK
from tests.fixtures import demo_data

NEW_TASK = "9d0c4a8e-2f1b-4c3d-8e5f-6a7b8c9d0e1f"


def _counts(storage: Storage) -> tuple[int, int, int]:
    with storage.session() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (models.InfrastructureProvider, models.Site, models.Task)
        )


def _task(storage: Storage, task_id: str) -> models.Task | None:
    with storage.session() as session:
        return session.get(models.Task, uuid.UUID(task_id))


def test_demo_loads_and_reloading_changes_nothing(storage: Storage, engine: Engine) -> None:
    first = fixture.load(storage, demo_data())
    counts = _counts(storage)
    assert counts == (first.providers, first.sites, first.tasks) == (2, 4, 9)
    created = _task(storage, PENDING_TASK).created_at
    fixture.load(storage, demo_data())
    assert _counts(storage) == counts
    assert _task(storage, PENDING_TASK).created_at == created


def test_reload_replaces_a_record_by_id(storage: Storage, engine: Engine) -> None:
    fixture.load(storage, demo_data())
    changed = fixture.parse(
        f"tasks:\n  - id: {PENDING_TASK}\n    site_id: {ACME_SITE}\n"
        "    status: running\n    message: picked up\n"
    )
    fixture.load(storage, changed)
    task = _task(storage, PENDING_TASK)
    assert (task.status, task.message) == ("running", "picked up")
    assert _counts(storage) == (2, 4, 9)


def test_json_file_with_raw_report(storage: Storage, engine: Engine, tmp_path: Path) -> None:
    fixture.load(storage, demo_data())
    path = tmp_path / "tasks.json"
    path.write_text(
        json.dumps(
            {
                "tasks": [
                    {
                        "id": NEW_TASK,
                        "site_id": ACME_SITE,
                        "status": "failed",
                        "report_raw": "{oops",
                    }
                ]
            }
        )
    )
    assert str(fixture.load_file(storage, path)) == "0 providers, 0 sites, 1 tasks"
    assert _task(storage, NEW_TASK).report == "{oops"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"tasks:\n  - id: {NEW_TASK}\n    site_id: {ACME_SITE}\n    status: pending\n"
            f"  - id: {PENDING_TASK}\n    site_id: {ACME_SITE}\n    status: done\n",
            f"tasks[1] (id {PENDING_TASK}) field 'status'",
        ),
        (
            f"tasks:\n  - id: {NEW_TASK}\n    site_id: {ACME_SITE}\n    status: pending\n"
            "    colour: blue\n",
            f"tasks[0] (id {NEW_TASK}) field 'colour'",
        ),
        (
            f"tasks:\n  - id: {NEW_TASK}\n    site_id: {ACME_SITE}\n    status: pending\n"
            "    report: {version: 1, stages: []}\n    report_raw: '{}'\n",
            "give either report or report_raw",
        ),
        (
            f"tasks:\n  - id: {NEW_TASK}\n    site_id: {ACME_SITE}\n    status: pending\n"
            "    started_at: not-a-time\n",
            "field 'started_at'",
        ),
        (
            f"tasks:\n  - id: {NEW_TASK}\n    site_id: 00000000-0000-4000-8000-000000000001\n"
            "    status: pending\n",
            f"tasks[0] (id {NEW_TASK}) field 'site_id': no site",
        ),
        (
            "providers:\n  - id: 00000000-0000-4000-8000-000000000002\n"
            f"    org: {GLOBEX}\n    name: Another\n",
            "providers[0] (id 00000000-0000-4000-8000-000000000002) field 'org'",
        ),
        ("sites: [{id: 1}]\n", "sites[0] (id 1) field 'id'"),
        ("- just a list\n", "the top level must be a mapping"),
        ("tasks: [\n", "not valid YAML or JSON"),
        ("rooms: []\n", "rooms"),
    ],
    ids=[
        "bad-status",
        "unknown-field",
        "two-reports",
        "bad-time",
        "no-site",
        "org-taken",
        "bad-uuid",
        "not-a-mapping",
        "bad-yaml",
        "unknown-section",
    ],
)
def test_a_file_with_an_error_is_rejected_whole(
    storage: Storage, engine: Engine, text: str, expected: str
) -> None:
    fixture.load(storage, demo_data())
    before = _counts(storage)
    with pytest.raises(fixture.FixtureError) as error:
        fixture.load(storage, fixture.parse(text))
    assert expected in str(error.value)
    assert _counts(storage) == before
    assert _task(storage, NEW_TASK) is None


TASK_HEAD = f"tasks:\n- {{id: {NEW_TASK}, site_id: {ACME_SITE}, status: pending"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"{TASK_HEAD}}}\n- {{id: {NEW_TASK}, site_id: {ACME_SITE}, status: running}}\n",
            f"tasks[1] (id {NEW_TASK}): the id is given twice (first at tasks[0])",
        ),
        (f"{TASK_HEAD}, status: running}}\n", "the key 'status' is given twice"),
        (
            f'{TASK_HEAD}, message: "a\\ud800b"}}\n',
            f"tasks[0] (id {NEW_TASK}) field 'message': text with a NUL or a lone surrogate",
        ),
        (
            f'{TASK_HEAD}, report: {{x: "a\\x00b"}}}}\n',
            f"tasks[0] (id {NEW_TASK}) field 'report.x': text with a NUL or a lone surrogate",
        ),
        (
            f"{TASK_HEAD}, report: !!binary aGVsbG8=}}\n",
            f"tasks[0] (id {NEW_TASK}) field 'report': a value of kind bytes, which is not JSON",
        ),
        pytest.param(
            f"{TASK_HEAD}, report: {'[' * 100_000}{']' * 100_000}}}\n",
            "nested too deeply",
            marks=pytest.mark.slow,  # PyYAML scans nested brackets in quadratic time: about 1 s
            id="deeply-nested",
        ),
        (
            f"{TASK_HEAD}, report: {'[' * 70}{']' * 70}}}\n",
            f"tasks[0] (id {NEW_TASK}) field 'report[0]",
        ),
        (
            f"{TASK_HEAD}, report: {{x: .nan}}}}\n",
            f"tasks[0] (id {NEW_TASK}) field 'report.x': nan is not a JSON number",
        ),
        ("? [a]\n: 1\n", "found unhashable key"),
    ],
    ids=[
        "duplicate-id",
        "duplicate-key",
        "lone-surrogate",
        "nul",
        "binary",
        "deeply-nested",
        "nested-past-the-limit",
        "not-a-number",
        "unhashable-key",
    ],
)
def test_input_neither_backend_stores_as_given_is_refused_by_name(text: str, message: str) -> None:
    # Refused before any database sees it, so both backends accept exactly the same files.
    with pytest.raises(fixture.FixtureError) as refused:
        fixture.parse(text, "tasks.yaml")
    assert message in str(refused.value)


def test_a_load_runs_without_the_request_statement_limit(storage: Storage, engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's statement timeout is a lock wait, which a load may need")
    sent: list[str] = []

    def capture(_conn, _cursor, statement, *_args) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        fixture.load(storage, demo_data())
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert sent[0] == "SET LOCAL statement_timeout = 0"


def test_a_yaml_merge_key_is_not_a_key_given_twice() -> None:
    text = (
        "tasks:\n"
        f"- &first {{id: {NEW_TASK}, site_id: {ACME_SITE}, status: pending}}\n"
        f"- {{<<: *first, id: {PENDING_TASK}}}\n"
    )
    loaded = fixture.parse(text, "tasks.yaml")
    assert [str(task.id) for task in loaded.tasks] == [NEW_TASK, PENDING_TASK]


def test_the_demo_inventory_and_rules_load(storage: Storage, engine: Engine) -> None:
    summary = fixture.load(storage, demo_data())
    assert (summary.racks, summary.trays, summary.rules) == (9, 72, 2)
    assert str(summary) == "2 providers, 4 sites, 9 tasks, 9 racks, 72 trays, 2 rules"
    with storage.session() as session:
        tray = session.get(models.Tray, uuid.UUID("3f9c2b7e-5a41-4d8e-9c6b-2e7d1a0f4b13"))
        assert (tray.type, tray.slot, tray.bmc_mac) == ("Compute", 20, "02:00:5e:01:01:14")
        rule = session.get(models.OperationRule, uuid.UUID("70cca086-04a4-4a0f-800a-b94b8be3a3db"))
        assert rule.is_default and rule.stages[1] == {
            "number": 2,
            "steps": [{"component_type": "Compute"}],
        }


RACK_ID = "5b0e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
RACK_HEAD = f"racks:\n- {{id: {RACK_ID}, site_id: {ACME_SITE}, external_id: X-1, name: X-1}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f"trays:\n- {{id: {NEW_TASK}, rack_id: {RACK_ID}, external_id: t, type: Compute, "
            "slot: 1}\n",
            f"trays[0] (id {NEW_TASK}) field 'rack_id': no rack {RACK_ID}",
        ),
        (
            f"racks:\n- {{id: {RACK_ID}, site_id: {NEW_TASK}, external_id: X, name: X}}\n",
            f"racks[0] (id {RACK_ID}) field 'site_id': no site {NEW_TASK}",
        ),
        (
            f"{RACK_HEAD}trays:\n- {{id: {NEW_TASK}, rack_id: {RACK_ID}, external_id: t, "
            "type: GPU, slot: 1}\n",
            f"trays[0] (id {NEW_TASK}) field 'type'",
        ),
        (
            f"{RACK_HEAD}trays:\n- {{id: {NEW_TASK}, rack_id: {RACK_ID}, external_id: t, "
            "type: Compute, slot: 1, bmc_mac: '02:00'}\n",
            "a MAC address is six two-digit hex numbers",
        ),
        (
            f"rules:\n- {{id: {NEW_TASK}, site_id: {ACME_SITE}, name: r, operation: power_on, "
            "stages: [{number: 1, steps: [{component_type: Compute}]}, "
            "{number: 1, steps: [{component_type: NVSwitch}]}]}\n",
            "each stage number is given once",
        ),
        (
            f"rules:\n- {{id: {NEW_TASK}, site_id: {ACME_SITE}, name: r, operation: warp, "
            "stages: []}\n",
            f"rules[0] (id {NEW_TASK}) field 'operation'",
        ),
    ],
    ids=["tray-without-rack", "rack-without-site", "tray-type", "mac", "stage-twice", "operation"],
)
def test_inventory_and_rules_are_checked(
    storage: Storage, engine: Engine, text: str, message: str
) -> None:
    with pytest.raises(fixture.FixtureError) as refused:
        fixture.load(storage, fixture.parse(text, "inventory.yaml"))
    assert message in str(refused.value)


def test_a_mac_address_is_stored_as_requests_are_matched(storage: Storage, engine: Engine) -> None:
    fixture.load(storage, demo_data())
    text = (
        f"{RACK_HEAD}trays:\n- {{id: {NEW_TASK}, rack_id: {RACK_ID}, external_id: t, "
        "type: PowerShelf, slot: 0, bmc_mac: '0A-1B-2C-3D-4E-5F'}\n"
    )
    fixture.load(storage, fixture.parse(text))
    with storage.session() as session:
        assert session.get(models.Tray, uuid.UUID(NEW_TASK)).bmc_mac == "0a:1b:2c:3d:4e:5f"


def _laughs(levels: int) -> str:
    """A report nested of aliases, each level ten of the one before: 10**levels values."""
    lines = [f"{TASK_HEAD}, report: *l{levels}}}"]
    anchors = ["l0: &l0 [lol]"] + [
        f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels + 1)
    ]
    return "anchors:\n" + "".join(f"  {a}\n" for a in anchors) + "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_a_nest_of_aliases_is_refused_at_once_and_nothing_is_stored(
    storage: Storage, engine: Engine, levels: int
) -> None:
    fixture.load(storage, demo_data())
    before = _counts(storage)
    bomb = _laughs(levels)
    assert len(bomb) < 1000
    started = time.monotonic()
    with pytest.raises(fixture.FixtureError) as refused:
        fixture.load(storage, fixture.parse(bomb, "laughs.yaml"))
    assert time.monotonic() - started < 1.0
    assert (
        f"laughs.yaml: its aliases expand it by more than {fixture.MAX_ALIASED_VALUES} values"
        in str(refused.value)
    )
    assert _counts(storage) == before
    assert _task(storage, NEW_TASK) is None


def test_aliases_that_expand_a_little_are_loaded() -> None:
    report = f"{{stages: [{', '.join(['{x: 1}'] * 10)}]}}"
    text = (
        f"tasks:\n- {{id: {NEW_TASK}, site_id: {ACME_SITE}, status: pending, "
        f"report: &report {report}}}\n"
        f"- {{id: {PENDING_TASK}, site_id: {ACME_SITE}, status: pending, report: *report}}\n"
    )
    loaded = fixture.parse(text, "tasks.yaml")
    assert loaded.tasks[0].report == loaded.tasks[1].report == {"stages": [{"x": 1}] * 10}


def test_a_value_that_contains_itself_is_refused() -> None:
    text = f"{TASK_HEAD}, report: &self [*self]}}\n"
    with pytest.raises(fixture.FixtureError, match="an alias refers to the value that contains it"):
        fixture.parse(text, "tasks.yaml")


def test_a_document_larger_than_the_bound_is_refused_unread(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fixture, "MAX_DOCUMENT_BYTES", 1000)
    big = tmp_path / "big.yaml"
    big.write_text(f"{TASK_HEAD}, message: {'x' * 1000}}}\n")
    with pytest.raises(fixture.FixtureError, match=r"big.yaml: larger than 1000 bytes"):
        fixture.load_file(storage, big)
    with pytest.raises(fixture.FixtureError, match=r"tasks.yaml: larger than 1000 bytes"):
        fixture.parse(big.read_text(), "tasks.yaml")
