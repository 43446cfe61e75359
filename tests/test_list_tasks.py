"""Retrieve all Tasks of a Site, of a Rack, of a Tray: filters, order, pages, and the checks."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, event
from starlette.testclient import TestClient

from nico_api.storage import fixture, queries
from nico_api.storage.db import Storage
from tests.demo import (
    ACME,
    ACME_LAB_SITE,
    ACME_SITE,
    ACME_SITE_2,
    GLOBEX,
    GLOBEX_SITE,
    PENDING_TASK,
    RACK,
    RUNNING_TASK,
    TRAY,
    TRAY_MAC,
    WAITING_TASK,
)
from tests.fixtures import Bearer

SITE_TASKS = 7  # the demo's tasks at sjc-dc1
LISTS = pytest.mark.parametrize(
    "path",
    [
        f"/v2/org/{ACME}/nico/task",
        f"/v2/org/{ACME}/nico/rack/{RACK}/task",
        f"/v2/org/{ACME}/nico/tray/{TRAY}/task",
    ],
    ids=["site", "rack", "tray"],
)


def listing(
    client: TestClient,
    headers: dict[str, str],
    path: str = f"/v2/org/{ACME}/nico/task",
    **query: object,
):
    params = {"siteId": ACME_SITE, **{k: str(v).lower() for k, v in query.items()}}
    return client.get(path, params=params, headers=headers)


def pagination(response) -> dict[str, int]:
    return json.loads(response.headers["x-pagination"])


def test_site_list_newest_first_without_reports(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer())
    assert response.status_code == 200
    tasks = response.json()
    assert len(tasks) == SITE_TASKS
    created = [(task["created"], task["id"]) for task in tasks]
    assert created == sorted(created, reverse=True)
    assert tasks[0]["id"] == WAITING_TASK
    assert all("report" not in task for task in tasks)
    assert response.headers["x-pagination"] == (
        f'{{"pageNumber":1,"pageSize":20,"total":{SITE_TASKS},"orderBy":null}}'
    )


def test_reports_on_request(client: TestClient, bearer: Bearer) -> None:
    tasks = listing(client, bearer(), includeReport=True).json()
    running = next(task for task in tasks if task["id"] == RUNNING_TASK)
    assert running["report"]["stages"][1]["steps"][0]["componentType"] == "Compute"


def test_pages_cover_the_set_once(client: TestClient, bearer: Bearer) -> None:
    seen = []
    for number in (1, 2, 3, 4):
        response = listing(client, bearer(), pageSize=2, pageNumber=number)
        assert pagination(response) == {
            "pageNumber": number,
            "pageSize": 2,
            "total": SITE_TASKS,
            "orderBy": None,
        }
        seen += [task["id"] for task in response.json()]
    everything = [task["id"] for task in listing(client, bearer()).json()]
    assert seen == everything
    assert listing(client, bearer(), pageSize=2, pageNumber=9).json() == []


def test_ties_in_creation_time_are_ordered_by_id(
    storage: Storage, client: TestClient, bearer: Bearer
) -> None:
    same_time = "2026-12-01T00:00:00Z"
    ids = ["00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"]
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {
                "tasks": [
                    {
                        "id": task_id,
                        "site_id": ACME_SITE,
                        "status": "pending",
                        "created_at": same_time,
                    }
                    for task_id in ids
                ]
            }
        ),
    )
    first_two = [task["id"] for task in listing(client, bearer(), pageSize=2).json()]
    assert first_two == [ids[1], ids[0]]


def test_active_only(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer(), activeOnly=True)
    assert {task["status"] for task in response.json()} == {"Pending", "Running"}
    assert {task["id"] for task in response.json()} >= {PENDING_TASK, WAITING_TASK, RUNNING_TASK}
    assert pagination(response)["total"] == 3


def test_rack_list(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/rack/{RACK}/task")
    assert [task["status"] for task in response.json()] == ["Running", "Succeeded"]
    assert pagination(response)["total"] == 2


@pytest.mark.parametrize("tray", [TRAY, TRAY_MAC, TRAY_MAC.upper().replace(":", "-")])
def test_tray_list_by_component_id_or_mac(client: TestClient, bearer: Bearer, tray: str) -> None:
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/tray/{tray}/task")
    assert [task["id"] for task in response.json()] == [RUNNING_TASK]


def test_a_tray_without_tasks_is_an_empty_page(client: TestClient, bearer: Bearer) -> None:
    # R-14's second compute tray: no task targets it.
    other = listing(client, bearer(), f"/v2/org/{ACME}/nico/tray/02:00:5e:01:01:15/task")
    assert other.json() == [] and pagination(other)["total"] == 0


def assert_error(response, status: int, message: str, data: dict | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"source": "nico", "message": message, "data": data}


@LISTS
@pytest.mark.parametrize(
    ("query", "data"),
    [
        ({"pageSize": 101}, {"PageSize": "must be less than or equal to: 100"}),
        ({"pageSize": -1}, {"PageSize": "must be greater than 0"}),
        ({"pageNumber": -3}, {"PageNumber": "must be greater than 0"}),
        ({"pageNumber": 21474837}, {"PageNumber": "must be less than or equal to: 21474836"}),
        (
            {"pageNumber": -1, "pageSize": 500},
            {
                "PageNumber": "must be greater than 0",
                "PageSize": "must be less than or equal to: 100",
            },
        ),
        (
            {"orderBy": "created"},
            {"OrderByStr": "must be in the format of field_ASC or field_DESC"},
        ),
        ({"orderBy": "CREATED_DESC"}, {}),
        ({"orderBy": ""}, {}),
    ],
    ids=[
        "size-high",
        "size-negative",
        "page-negative",
        "page-high",
        "both",
        "order-form",
        "order",
        "order-empty",
    ],
)
def test_paging_validation_names_the_go_field(
    client: TestClient, bearer: Bearer, path: str, query: dict, data: dict
) -> None:
    response = client.get(path, params={"siteId": ACME_SITE, **query}, headers=bearer())
    assert_error(response, 400, "Failed to validate pagination request data", data)


@LISTS
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"pageNumber": "x"}, "Failed to parse request pagination data"),
        ({"pageSize": "1.5"}, "Failed to parse request pagination data"),
        ({"pageSize": " 5"}, "Failed to parse request pagination data"),
        ({"activeOnly": "perhaps"}, "Failed to parse request data"),
        ({"includeReport": "yes"}, "Failed to parse request data"),
    ],
)
def test_a_value_that_cannot_be_read(
    client: TestClient, bearer: Bearer, path: str, query: dict, message: str
) -> None:
    # Paging is bound at its own step, with its own message; the other parameters earlier.
    response = client.get(path, params={"siteId": ACME_SITE, **query}, headers=bearer())
    assert_error(response, 400, message)


@LISTS
@pytest.mark.parametrize(
    ("text", "active"),
    [
        ("1", True),
        ("t", True),
        ("TRUE", True),
        ("True", True),
        ("0", False),
        ("F", False),
        ("", False),
    ],
)
def test_booleans_read_as_go_reads_them(
    client: TestClient, bearer: Bearer, path: str, text: str, active: bool
) -> None:
    response = client.get(path, params={"siteId": ACME_SITE, "activeOnly": text}, headers=bearer())
    assert response.status_code == 200, response.text
    expected = listing(client, bearer(), path, activeOnly=active)
    assert response.json() == expected.json()


@LISTS
@pytest.mark.parametrize(
    "query",
    [
        {"pageNumber": "0", "pageSize": "0"},
        {"pageNumber": "", "pageSize": ""},
        {"pageNumber": "+1", "pageSize": "020"},
    ],
)
def test_zero_or_empty_paging_is_the_default(
    client: TestClient, bearer: Bearer, path: str, query: dict
) -> None:
    response = client.get(path, params={"siteId": ACME_SITE, **query}, headers=bearer())
    assert response.status_code == 200, response.text
    assert (pagination(response)["pageNumber"], pagination(response)["pageSize"]) == (1, 20)


@LISTS
def test_query_checks_in_order(client: TestClient, bearer: Bearer, path: str) -> None:
    def get(**query: str):
        return client.get(path, params=query, headers=bearer())

    assert_error(
        get(foo="1", activeOnly="x"), 400, "Unknown query parameter specified in request: foo"
    )
    assert_error(get(activeOnly="x"), 400, "Failed to parse request data")
    assert_error(get(), 400, "siteId query parameter is required")
    assert_error(get(siteId=""), 400, "siteId query parameter is required")


# Bodies sent with a GET, by whether production's binder reads them into the request.
UNBOUND_BODIES = [
    ("text/plain", b"siteId"),
    ("multipart/form-data", b"--x\r\nbroken"),
    ("application/json", b"{broken"),
    ("application/json", b"[1]"),
    ("application/json", b'"text"'),
]
BOUND_BODIES = [("application/json", b'{"anything": 1}'), ("application/json", b"null"), ("", b"")]


@LISTS
@pytest.mark.parametrize(("content_type", "body"), UNBOUND_BODIES)
def test_a_body_that_cannot_be_bound_fails_the_bind(
    client: TestClient, bearer: Bearer, path: str, content_type: str, body: bytes
) -> None:
    def get(**query: str):
        headers = {**bearer(), "Content-Type": content_type}
        return client.request("GET", path, params=query, headers=headers, content=body)

    # After the unknown keys, before the required siteId: production binds query and body at once.
    assert_error(get(foo="1"), 400, "Unknown query parameter specified in request: foo")
    assert_error(get(), 400, "Failed to parse request data")
    assert_error(get(siteId=ACME_SITE), 400, "Failed to parse request data")


@LISTS
@pytest.mark.parametrize(("content_type", "body"), BOUND_BODIES)
def test_a_body_that_binds_is_ignored(
    client: TestClient, bearer: Bearer, path: str, content_type: str, body: bytes
) -> None:
    headers = {**bearer(), "Content-Type": content_type}
    response = client.request(
        "GET", path, params={"siteId": ACME_SITE}, headers=headers, content=body
    )
    assert response.status_code == 200, response.text
    assert response.json() == listing(client, bearer(), path).json()


def test_the_site_list_binds_its_body_after_membership(client: TestClient, bearer: Bearer) -> None:
    response = client.request(
        "GET",
        f"/v2/org/{ACME}/nico/task",
        params={"siteId": ACME_SITE},
        headers={**bearer(GLOBEX), "Content-Type": "text/plain"},
        content=b"x",
    )
    assert response.status_code == 403


@LISTS
def test_paging_is_checked_after_the_site(client: TestClient, bearer: Bearer, path: str) -> None:
    response = client.get(path, params={"siteId": ACME_LAB_SITE, "pageSize": "x"}, headers=bearer())
    assert_error(response, 412, "Site does not have NICo Flow enabled")


def test_site_list_checks_membership_and_role_before_the_query(
    client: TestClient, bearer: Bearer
) -> None:
    path = f"/v2/org/{ACME}/nico/task"
    response = client.get(path, params={"foo": "1"}, headers=bearer(GLOBEX))
    assert_error(response, 403, f"Failed to validate membership for org: {ACME}")
    response = client.get(path, headers=bearer(ACME, "TENANT_ADMIN"))
    assert_error(response, 403, "User does not have Provider Admin role with org")


@pytest.mark.parametrize("kind", ["rack", "tray"])
def test_rack_and_tray_lists_check_the_query_before_membership(
    client: TestClient, bearer: Bearer, kind: str
) -> None:
    path = f"/v2/org/{ACME}/nico/{kind}/{RACK}/task"
    response = client.get(path, params={"foo": "1"}, headers=bearer(GLOBEX))
    assert_error(response, 400, "Unknown query parameter specified in request: foo")
    response = client.get(path, headers=bearer(GLOBEX))
    assert_error(response, 400, "siteId query parameter is required")


def test_org_is_lower_cased(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer(), "/v2/org/ACME-Inc/nico/task")
    assert response.status_code == 200 and len(response.json()) == SITE_TASKS
    response = client.get(
        "/v2/org/ACME-Inc/nico/task", params={"siteId": ACME_SITE}, headers=bearer(GLOBEX)
    )
    assert_error(response, 403, f"Failed to validate membership for org: {ACME}")


@LISTS
@pytest.mark.parametrize(
    ("org", "roles", "site", "status", "message"),
    [
        (ACME, (), None, 401, "Request is missing authorization header"),
        (
            GLOBEX,
            ("PROVIDER_ADMIN",),
            ACME_SITE,
            403,
            f"Failed to validate membership for org: {ACME}",
        ),
        (
            ACME,
            ("TENANT_ADMIN",),
            ACME_SITE,
            403,
            "User does not have Provider Admin role with org",
        ),
        (
            ACME,
            ("PROVIDER_ADMIN",),
            "nope",
            400,
            "Failed to validate Site specified in request: invalid ID",
        ),
        (
            ACME,
            ("PROVIDER_ADMIN",),
            "00000000-0000-4000-8000-000000000000",
            400,
            "Site specified in request does not exist",
        ),
        (
            ACME,
            ("PROVIDER_ADMIN",),
            GLOBEX_SITE,
            403,
            "Site specified in request doesn't belong to current org's Provider",
        ),
        (ACME, ("PROVIDER_ADMIN",), ACME_LAB_SITE, 412, "Site does not have NICo Flow enabled"),
    ],
    ids=[
        "no-token",
        "other-org",
        "tenant-admin",
        "bad-site",
        "no-site",
        "other-provider",
        "no-flow",
    ],
)
def test_the_checks_of_retrieve_a_task_apply(
    client: TestClient,
    bearer: Bearer,
    path: str,
    org: str,
    roles: tuple,
    site: str | None,
    status: int,
    message: str,
) -> None:
    headers = bearer(org, *roles) if roles else {}
    response = client.get(path, params={"siteId": site or ACME_SITE}, headers=headers)
    assert_error(response, status, message)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rack", "rack with external id zz is not found"),
        ("tray", 'component identifier "zz" not found'),
    ],
)
def test_an_id_that_names_nothing_is_flows_not_found(
    client: TestClient, bearer: Bearer, kind: str, message: str
) -> None:
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/{kind}/zz/task")
    assert_error(response, 404, message)


def test_a_rack_of_another_site_is_not_found(client: TestClient, bearer: Bearer) -> None:
    # The Rack ID is resolved at the Site the request names.
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/rack/{RACK}/task")
    assert response.status_code == 200
    other = client.get(
        f"/v2/org/{ACME}/nico/rack/{RACK}/task",
        params={"siteId": ACME_SITE_2},
        headers=bearer(),
    )
    assert_error(other, 404, f"rack with external id {RACK} is not found")


def test_a_mac_address_of_two_trays_is_ambiguous(
    client: TestClient, bearer: Bearer, storage: Storage
) -> None:
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {
                "trays": [
                    {
                        "id": str(uuid.uuid4()),
                        "rack_id": "34aec697-9431-4100-913c-72012c5c696b",
                        "external_id": "spare-tray",
                        "bmc_mac": TRAY_MAC,
                        "type": "Compute",
                        "slot": 30,
                    }
                ]
            }
        ),
    )
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/tray/{TRAY_MAC}/task")
    assert_error(response, 412, f'component identifier "{TRAY_MAC}" is ambiguous')
    # Its component ID still names one tray.
    assert listing(client, bearer(), f"/v2/org/{ACME}/nico/tray/{TRAY}/task").status_code == 200


def test_org_without_provider(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer("initech"), "/v2/org/initech/nico/task")
    assert_error(response, 400, "Failed to retrieve Infrastructure Provider for org")


def test_a_page_of_active_tasks_reads_the_active_tasks_index(
    client: TestClient, engine: Engine
) -> None:
    page, _ = queries.task_page(
        uuid.UUID(ACME_SITE), active_only=True, include_report=False, page_number=1, page_size=20
    )
    sent: list[tuple[str, object]] = []

    def capture(*args: Any) -> None:
        sent.append((args[2], args[3]))  # the statement and its parameters

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", capture)
        assert len(connection.execute(page).all()) == 3
        event.remove(connection, "before_cursor_execute", capture)
        statement, parameters = sent[0]
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        plan = connection.exec_driver_sql(explain + statement, parameters).all()
    assert "ix_task_active_site_id_created_at_id" in " ".join(map(str, plan))


def test_the_first_of_repeated_keys_is_read(client: TestClient, bearer: Bearer) -> None:
    path = f"/v2/org/{ACME}/nico/task?siteId={ACME_SITE}"
    response = client.get(path + "&pageSize=2&pageSize=abc", headers=bearer())
    assert response.status_code == 200, response.text
    assert pagination(response)["pageSize"] == 2
    response = client.get(f"/v2/org/{ACME}/nico/task?siteId=&siteId={ACME_SITE}", headers=bearer())
    assert_error(response, 400, "siteId query parameter is required")


def test_a_rack_id_no_database_stores_names_nothing(client: TestClient, bearer: Bearer) -> None:
    response = listing(client, bearer(), f"/v2/org/{ACME}/nico/rack/a%00b/task")
    assert_error(response, 404, "rack with external id a\x00b is not found")


@LISTS
def test_a_form_sent_with_a_get_binds_nothing(
    client: TestClient, bearer: Bearer, path: str
) -> None:
    # Go's ParseForm reads no body of a GET, however broken the form.
    headers = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.request(
        "GET", path, params={"siteId": ACME_SITE}, headers=headers, content=b"a=%zz;b"
    )
    assert response.status_code == 200, response.text
    assert response.json() == listing(client, bearer(), path).json()
