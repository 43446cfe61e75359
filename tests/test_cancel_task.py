"""Cancel a Task: every row of docs/contract.md's cancel-task in production's order; unfinished
tasks become terminated once, completed and failed ones are 412 with NICo Flow's message."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from nico_api.storage.db import Storage
from nico_api.storage.models import Task
from tests.demo import (
    ACME,
    ACME_LAB_SITE,
    ACME_SITE,
    ACME_SITE_2,
    BOTH_PATHS,
    COMPLETED_TASK,
    FAILED_TASK,
    GLOBEX,
    PENDING_TASK,
    RUNNING_TASK,
    SITE_2_TASK,
    TERMINATED_TASK,
    UNKNOWN_TASK,
    WAITING_TASK,
)
from tests.fixtures import Bearer


def cancel(
    client: TestClient,
    task_id: str,
    headers: dict[str, str],
    site: str = ACME_SITE,
    rack: bool = False,
):
    path = f"/v2/org/{ACME}/nico/{'rack/' if rack else ''}task/{task_id}/cancel"
    return client.post(path, json={"siteId": site}, headers=headers)


@BOTH_PATHS
@pytest.mark.parametrize("task_id", [PENDING_TASK, WAITING_TASK, RUNNING_TASK])
def test_cancel_task_14_active_task_is_terminated(
    storage: Storage, client: TestClient, bearer: Bearer, task_id: str, rack: bool
) -> None:
    response = cancel(client, task_id, bearer(), rack=rack)
    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["status"], task["message"]) == ("Terminated", "Cancelled by user")
    assert task["finished"] is not None and task["updated"] == task["finished"]
    if task_id == RUNNING_TASK:
        assert task["report"]["version"] == 1  # the task as stored, report included
    with storage.session() as session:
        assert session.get(Task, uuid.UUID(task_id)).status == "terminated"


def test_cancelling_again_changes_nothing(client: TestClient, bearer: Bearer) -> None:
    first = cancel(client, PENDING_TASK, bearer()).json()
    second = cancel(client, PENDING_TASK, bearer())
    assert second.status_code == 202
    assert second.json() == first


def test_already_terminated_task_is_returned_unchanged(client: TestClient, bearer: Bearer) -> None:
    before = client.get(
        f"/v2/org/{ACME}/nico/task/{TERMINATED_TASK}",
        params={"siteId": ACME_SITE},
        headers=bearer(),
    ).json()
    response = cancel(client, TERMINATED_TASK, bearer())
    assert response.status_code == 202
    assert response.json() == before


@BOTH_PATHS
@pytest.mark.parametrize(
    ("task_id", "stored"), [(COMPLETED_TASK, "completed"), (FAILED_TASK, "failed")]
)
def test_cancel_task_13_finished_task_is_412_with_flows_message(
    storage: Storage, client: TestClient, bearer: Bearer, task_id: str, stored: str, rack: bool
) -> None:
    assert_error(
        cancel(client, task_id, bearer(), rack=rack),
        412,
        f"task cannot be cancelled: task {task_id} has status {stored}",
    )
    with storage.session() as session:
        assert session.get(Task, uuid.UUID(task_id)).status == stored


def test_unknown_task_is_cancelled(client: TestClient, bearer: Bearer) -> None:
    response = cancel(client, UNKNOWN_TASK, bearer())
    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["message"]) == (
        "Terminated",
        "Cancelled by user",
    )


def assert_error(response, status: int, message: str, data: dict | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"source": "nico", "message": message, "data": data}


def post(client: TestClient, task_id: str, headers: dict[str, str], body: bytes, **extra: str):
    headers = {"Content-Type": "application/json", **headers, **extra}
    return client.post(f"/v2/org/{ACME}/nico/task/{task_id}/cancel", content=body, headers=headers)


SITE_BODY = b'{"siteId": "%s"}' % ACME_SITE.encode()


# docs/contract.md's cancel-task, row by row (row 1, no DB user, cannot happen: a caller is a user).
@BOTH_PATHS
def test_cancel_task_2_membership(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = cancel(client, PENDING_TASK, bearer(GLOBEX), rack=rack)
    assert_error(response, 403, f"Failed to validate membership for org: {ACME}")


def test_cancel_task_3_provider_admin_role(client: TestClient, bearer: Bearer) -> None:
    response = cancel(client, PENDING_TASK, bearer(ACME, "TENANT_ADMIN"))
    assert_error(response, 403, "User does not have Provider Admin role with org")


def test_cancel_task_4_provider(client: TestClient, bearer: Bearer) -> None:
    response = client.post(
        f"/v2/org/initech/nico/task/{PENDING_TASK}/cancel",
        json={"siteId": ACME_SITE},
        headers=bearer("initech"),
    )
    assert_error(response, 400, "Failed to retrieve Infrastructure Provider for org")


def test_cancel_task_5_task_id(client: TestClient, bearer: Bearer) -> None:
    assert_error(cancel(client, "zz", bearer()), 400, "Invalid Task ID specified in URL")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"siteId": 7}', "application/json"),
        (b"[]", "application/json"),
        (b"\xff\xfe", "application/json"),
        (SITE_BODY, "text/plain"),
        (SITE_BODY, "Application/JSON"),
        (SITE_BODY, ""),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"siteId": ' + b"7" * 5000 + b"}", "application/json"),
        (SITE_BODY[:-1] + b', "x": NaN}', "application/json"),
    ],
    ids=[
        "bad-json",
        "wrong-type",
        "array",
        "not-utf8",
        "text-plain",
        "upper-case-json",
        "no-content-type",
        "nested-100000-deep",
        "integer-of-5000-digits",
        "nan",
    ],
)
def test_cancel_task_6_body_that_cannot_be_read(
    client: TestClient, bearer: Bearer, body: bytes, content_type: str
) -> None:
    headers = {**bearer(), "Content-Type": content_type}
    if not content_type:
        del headers["Content-Type"]
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel", content=body, headers=headers
    )
    assert_error(response, 400, "Failed to parse request data")


@pytest.mark.parametrize(
    "body", [b"", b"{}", b"null", b'{"siteId": ""}', b'{"siteId": null}'], ids=repr
)
def test_cancel_task_7_site_id_missing_or_empty(
    client: TestClient, bearer: Bearer, body: bytes
) -> None:
    response = post(client, PENDING_TASK, bearer(), body)
    assert_error(response, 400, "Failed to validate cancel task request data", {})


@pytest.mark.parametrize(
    ("site", "status", "message"),
    [
        ("nope", 400, "Failed to validate Site specified in request: invalid ID"),
        (str(uuid.UUID(int=7)), 400, "Site specified in request does not exist"),
        (
            "b694576b-644a-438b-8594-d1d332d404b7",
            403,
            "Site specified in request doesn't belong to current org's Provider",
        ),
        (ACME_LAB_SITE, 412, "Site does not have NICo Flow enabled"),
    ],
    ids=["invalid", "unknown", "other-provider", "no-flow"],
)
def test_cancel_task_8_to_12_site_checks(
    client: TestClient, bearer: Bearer, site: str, status: int, message: str
) -> None:
    assert_error(cancel(client, PENDING_TASK, bearer(), site=site), status, message)


def test_a_task_at_another_site_is_not_touched(client: TestClient, bearer: Bearer) -> None:
    assert_error(cancel(client, SITE_2_TASK, bearer()), 404, "Task not found")
    assert cancel(client, SITE_2_TASK, bearer(), site=ACME_SITE_2).status_code == 412


def test_authentication_comes_first(client: TestClient) -> None:
    assert_error(
        post(client, PENDING_TASK, {}, b"{"), 401, "Request is missing authorization header"
    )


@pytest.mark.parametrize(
    ("org", "roles", "task_id", "message"),
    [
        (GLOBEX, (), PENDING_TASK, f"Failed to validate membership for org: {ACME}"),
        (ACME, ("TENANT_ADMIN",), PENDING_TASK, "User does not have Provider Admin role with org"),
        (ACME, (), "zz", "Invalid Task ID specified in URL"),
    ],
)
def test_the_body_is_read_after_membership_role_and_task_id(
    client: TestClient, bearer: Bearer, org: str, roles: tuple, task_id: str, message: str
) -> None:
    response = post(client, task_id, bearer(org, *roles), b"{not json")
    assert response.json()["message"] == message


def test_the_body_is_read_before_the_site(client: TestClient, bearer: Bearer) -> None:
    response = post(client, PENDING_TASK, bearer(), b'{"siteId": "", "x": 1}')
    assert_error(response, 400, "Failed to validate cancel task request data", {})


def test_query_parameters_and_extra_fields_are_ignored(client: TestClient, bearer: Bearer) -> None:
    response = client.post(
        f"/v2/org/ACME-INC/nico/task/{PENDING_TASK}/cancel",
        params={"foo": "1", "siteId": "nope"},
        json={"siteId": ACME_SITE, "reason": "maintenance"},
        headers=bearer(),
    )
    assert response.status_code == 202, response.text


def test_concurrent_cancels_update_the_task_once(
    threaded_client: TestClient, bearer: Bearer, engine: Engine
) -> None:
    headers = bearer()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: cancel(threaded_client, RUNNING_TASK, headers), range(8)))
    assert {answer.status_code for answer in answers} == {202}
    # One update happened: every answer shows the same cancellation time.
    assert len({answer.json()["finished"] for answer in answers}) == 1


def chunked(body: bytes):
    """The body sent in chunks, with no Content-Length."""
    yield from (body[i : i + 1000] for i in range(0, len(body), 1000))


@pytest.mark.parametrize(
    ("body", "content_type", "message", "data"),
    [
        (b"[" * 100_000, "application/json", "Failed to parse request data", None),
        (SITE_BODY, "text/plain", "Failed to parse request data", None),
        (b'{"siteId": ""}', "application/json", "Failed to validate cancel task request data", {}),
    ],
    ids=["nested-100000-deep", "text-plain", "empty-site-id"],
)
def test_a_chunked_body_is_read_as_any_other(
    client: TestClient, bearer: Bearer, body: bytes, content_type: str, message: str, data
) -> None:
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel",
        content=chunked(body),
        headers={**bearer(), "Content-Type": content_type},
    )
    assert_error(response, 400, message, data)


def test_a_chunked_body_cancels(client: TestClient, bearer: Bearer) -> None:
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel",
        content=chunked(SITE_BODY),
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_an_empty_body_of_any_type_binds_nothing(
    client: TestClient, bearer: Bearer, content_type: str
) -> None:
    headers = {**bearer(), "Content-Type": content_type}
    if not content_type:
        del headers["Content-Type"]
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel", content=b"", headers=headers
    )
    assert_error(response, 400, "Failed to validate cancel task request data", {})


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/jsonx"])
def test_any_content_type_that_starts_application_json_is_json(
    client: TestClient, bearer: Bearer, content_type: str
) -> None:
    # Production's binder takes the type by prefix.
    response = post(client, PENDING_TASK, bearer(), SITE_BODY, **{"Content-Type": content_type})
    assert response.status_code == 202, response.text
