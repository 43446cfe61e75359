"""Cancel a Task: pending, waiting and running tasks become terminated once; finished ones 409."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from nico_api import db
from nico_api.models import Task
from tests.conftest import Bearer
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
def test_active_task_is_terminated(
    client: TestClient, bearer: Bearer, task_id: str, rack: bool
) -> None:
    response = cancel(client, task_id, bearer(), rack=rack)
    assert response.status_code == 202, response.text
    task = response.json()
    assert (task["status"], task["message"]) == ("Terminated", "Cancelled by user")
    assert task["finished"] is not None and task["updated"] == task["finished"]
    if task_id == RUNNING_TASK:
        assert task["report"]["version"] == 1  # the task as stored, report included
    with db.session() as session:
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


@pytest.mark.parametrize(
    ("task_id", "status"),
    [(COMPLETED_TASK, "Succeeded"), (FAILED_TASK, "Failed"), (UNKNOWN_TASK, "Unknown")],
)
def test_finished_task_cannot_be_cancelled(
    client: TestClient, bearer: Bearer, task_id: str, status: str
) -> None:
    response = cancel(client, task_id, bearer())
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "source": "nico",
        "message": f"Task cannot be cancelled: its status is {status}",
        "data": None,
    }


@pytest.mark.parametrize(
    ("headers_for", "task_id", "site", "body", "status", "message"),
    [
        (None, PENDING_TASK, ACME_SITE, None, 401, "Request is missing authorization header"),
        ((ACME,), PENDING_TASK, ACME_SITE, {}, 400, "'siteId' is a required property"),
        ((GLOBEX,), PENDING_TASK, ACME_SITE, None, 403, "Failed to validate membership"),
        ((ACME, "TENANT_ADMIN"), PENDING_TASK, ACME_SITE, None, 403, "Provider Admin role"),
        ((ACME,), "zz", ACME_SITE, None, 400, "Invalid Task ID specified in URL"),
        ((ACME,), PENDING_TASK, "nope", None, 400, "Failed to validate Site"),
        ((ACME,), PENDING_TASK, ACME_LAB_SITE, None, 412, "NICo Flow"),
        ((ACME,), SITE_2_TASK, ACME_SITE, None, 404, "Task not found"),
    ],
    ids=[
        "no-token",
        "no-site",
        "other-org",
        "tenant",
        "bad-id",
        "bad-site",
        "no-flow",
        "other-site",
    ],
)
def test_the_checks_apply(
    client: TestClient,
    bearer: Bearer,
    headers_for: tuple | None,
    task_id: str,
    site: str,
    body: dict | None,
    status: int,
    message: str,
) -> None:
    headers = bearer(*headers_for) if headers_for else {}
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{task_id}/cancel",
        json={"siteId": site} if body is None else body,
        headers=headers,
    )
    assert response.status_code == status, response.text
    assert message in response.json()["message"]


def test_a_task_at_another_site_is_not_touched(client: TestClient, bearer: Bearer) -> None:
    assert cancel(client, SITE_2_TASK, bearer()).status_code == 404
    assert cancel(client, SITE_2_TASK, bearer(), site=ACME_SITE_2).status_code == 409


def test_concurrent_cancels_update_the_task_once(
    client: TestClient, bearer: Bearer, engine: Engine
) -> None:
    headers = bearer()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: cancel(client, RUNNING_TASK, headers), range(8)))
    assert {answer.status_code for answer in answers} == {202}
    # One update happened: every answer shows the same cancellation time.
    assert len({answer.json()["finished"] for answer in answers}) == 1


@pytest.mark.parametrize("body", [b"\xff\xfe", b"{not json", b'{"siteId": 7}', b"[]"])
def test_a_broken_body_is_400(client: TestClient, bearer: Bearer, body: bytes) -> None:
    response = client.post(
        f"/v2/org/{ACME}/nico/task/{PENDING_TASK}/cancel",
        content=body,
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["source"] == "nico"
