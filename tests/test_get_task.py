"""Retrieve a Task through the real app: every row of docs/contract.md's get-task, in its order."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from nico_api.auth import authenticator as auth
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import fixture
from nico_api.storage.db import Storage
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from nico_api.wire import schemas
from tests.demo import (
    ACME,
    ACME_LAB_SITE,
    ACME_SITE,
    ACME_SITE_2,
    BOTH_PATHS,
    COMPLETED_TASK,
    FAILED_TASK,
    GLOBEX,
    GLOBEX_SITE,
    PENDING_TASK,
    RULE,
    RUNNING_TASK,
    SITE_2_TASK,
    TERMINATED_TASK,
    UNKNOWN_TASK,
    WAITING_TASK,
    task_path,
)
from tests.fixtures import Bearer


def assert_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"source": "nico", "message": message, "data": None}


def get(
    client: TestClient,
    task_id: str,
    headers: dict[str, str],
    *,
    site: str | None = ACME_SITE,
    org: str = ACME,
    rack: bool = False,
    **query: str,
):
    params = dict(query)
    if site is not None:
        params["siteId"] = site
    return client.get(task_path(task_id, org, rack), params=params, headers=headers)


# --- success ---------------------------------------------------------------------------------


@BOTH_PATHS
def test_returns_the_task_with_its_report(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = get(client, RUNNING_TASK, bearer(), rack=rack)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    task = response.json()
    assert task["id"] == RUNNING_TASK
    assert task["status"] == "Running"
    assert task["description"] == "Firmware update for rack R-14"
    assert task["ruleId"] == RULE
    assert task["started"] == "2026-11-02T09:00:05Z"
    assert task["finished"] is None
    assert task["created"] == "2026-11-02T09:00:00Z"
    assert task["updated"] == "2026-11-02T09:20:00Z"
    report = task["report"]
    assert report["version"] == 1
    assert [stage["status"] for stage in report["stages"]] == ["completed", "running", "pending"]
    assert report["stages"][0]["steps"][1] == {
        "componentType": "NVLSwitch",
        "status": "completed",
        "totalComponents": 9,
        "succeededComponents": 9,
        "failedComponents": 0,
        "startedAt": "2026-11-02T09:04:30Z",
        "finishedAt": "2026-11-02T09:10:00Z",
    }
    # Optional report fields are omitted, never null.
    assert report["stages"][2] == {
        "number": 3,
        "status": "pending",
        "steps": [
            {
                "componentType": "Compute",
                "status": "pending",
                "totalComponents": 18,
                "succeededComponents": 0,
                "failedComponents": 0,
            }
        ],
    }


def test_both_paths_return_the_same_body(client: TestClient, bearer: Bearer) -> None:
    headers = bearer()
    for task_id in (RUNNING_TASK, FAILED_TASK, PENDING_TASK):
        current = get(client, task_id, headers)
        legacy = get(client, task_id, headers, rack=True)
        assert current.status_code == legacy.status_code == 200
        assert current.content == legacy.content


@pytest.mark.parametrize(
    ("task_id", "status"),
    [
        (PENDING_TASK, "Pending"),
        (WAITING_TASK, "Pending"),
        (RUNNING_TASK, "Running"),
        (COMPLETED_TASK, "Succeeded"),
        (FAILED_TASK, "Failed"),
        (TERMINATED_TASK, "Terminated"),
        (UNKNOWN_TASK, "Unknown"),
    ],
)
def test_flow_status_is_translated(
    client: TestClient, bearer: Bearer, task_id: str, status: str
) -> None:
    response = get(client, task_id, bearer())
    assert response.status_code == 200
    assert response.json()["status"] == status


def test_unset_fields_are_null_and_absent_report_is_omitted(
    client: TestClient, bearer: Bearer
) -> None:
    task = get(client, PENDING_TASK, bearer()).json()
    assert task["ruleId"] is None
    assert task["started"] is None
    assert task["finished"] is None
    assert task["message"] == ""
    assert "report" not in task


def test_failed_task_report_carries_errors(client: TestClient, bearer: Bearer) -> None:
    report = get(client, FAILED_TASK, bearer()).json()["report"]
    assert report["error"] == "2 compute trays did not come back after firmware update"
    assert report["stages"][1]["error"] == report["error"]
    assert report["stages"][1]["steps"][0]["failedComponents"] == 2
    assert report["stages"][2]["status"] == "skipped"


@pytest.mark.parametrize(
    "stored",
    [
        {"report_raw": "{not json"},
        {"report_raw": '{"version": 1, "stages": "many"}'},
        {"report": {"version": 2, "stages": []}},
        {"report": [1, 2, 3]},
        {"report": {"version": 1, "stages": [{"number": 1, "status": "RUNNING", "steps": []}]}},
        {"report": {"version": 1, "stages": [{"number": 1, "status": "running"}]}},
        {"report": {"version": 1, "stages": [], "error": 42}},
    ],
    ids=[
        "not-json",
        "stages-not-a-list",
        "version-2",
        "array",
        "bad-status",
        "no-steps",
        "error-not-text",
    ],
)
def test_unusable_stored_report_is_dropped(
    storage: Storage, client: TestClient, bearer: Bearer, stored: dict[str, object]
) -> None:
    task_id = "0b9f5d0e-5d7e-4f53-9b0c-7d1f4f2f7a11"
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {"tasks": [{"id": task_id, "site_id": ACME_SITE, "status": "completed", **stored}]}
        ),
    )
    response = get(client, task_id, bearer())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "Succeeded"
    assert "report" not in response.json()


def test_report_stored_as_broken_json_text_is_dropped(
    client: TestClient, bearer: Bearer, engine
) -> None:
    # As Flow might write it, bypassing this service: text that is not JSON at all. Only
    # SQLite can hold it; PostgreSQL's jsonb refuses it on the way in.
    if engine.dialect.name != "sqlite":
        pytest.skip("jsonb cannot store text that is not JSON")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE task SET report = '{broken' WHERE id = ?", (uuid.UUID(RUNNING_TASK).hex,)
        )
    response = get(client, RUNNING_TASK, bearer())
    assert response.status_code == 200, response.text
    assert "report" not in response.json()


def test_the_event_loops_read_finds_what_a_worker_thread_reads(
    app: NICoApp, storage: Storage
) -> None:
    # The lookup runs on the event loop (Storage.local on SQLite, Storage.pooled on PostgreSQL),
    # its report decoded there or, over 64 KB, in a worker thread: it finds exactly what the
    # worker thread's read through the pool finds.
    large_task = "5c0c3e0e-8a1f-4f8e-9d55-0f6a3c2b1d77"
    step = {
        "component_type": "Compute",
        "status": "completed",
        "total_components": 1,
        "completed_components": 1,
        "failed_components": 0,
    }
    stages = [{"number": n, "status": "completed", "steps": [step]} for n in range(1, 701)]
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {
                "tasks": [
                    {
                        "id": large_task,
                        "site_id": ACME_SITE,
                        "status": "completed",
                        "report": {"version": 1, "stages": stages},
                    }
                ]
            }
        ),
    )
    store = app.runtime.store
    cases = [
        (ACME, ACME_SITE, RUNNING_TASK),
        (ACME, ACME_SITE, large_task),
        (ACME, ACME_SITE, UNKNOWN_TASK),
        (ACME, ACME_SITE_2, RUNNING_TASK),
        (ACME, GLOBEX_SITE, RUNNING_TASK),
        ("no-such-org", ACME_SITE, RUNNING_TASK),
        (ACME, None, None),
    ]

    async def on_the_loop(org: str, site: uuid.UUID | None, task: uuid.UUID | None) -> object:
        try:
            return await store.lookup(org, site, task)
        finally:
            await storage.close_reads()

    for org, site, task in cases:
        site_id = uuid.UUID(site) if site else None
        task_id = uuid.UUID(task) if task else None
        in_thread = store._lookup({"org": org, "site_id": site_id, "task_id": task_id})
        assert asyncio.run(on_the_loop(org, site_id, task_id)) == in_thread, (org, site, task)
    large = store._lookup(
        {"org": ACME, "site_id": uuid.UUID(ACME_SITE), "task_id": uuid.UUID(large_task)}
    )
    assert large.task is not None and len(large.task.report.stages) == 700


def test_legacy_prefixed_provider_admin_role_is_allowed(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer(ACME, "NICO_PROVIDER_ADMIN"))
    assert response.status_code == 200


# --- auth-1 to auth-3: authentication (docs/contract.md) --------------------------------------


@BOTH_PATHS
def test_auth_1_missing_authorization_header(client: TestClient, rack: bool) -> None:
    assert_error(get(client, RUNNING_TASK, {}, rack=rack), 401, auth.MISSING_HEADER)


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", "Bearer a b", " Bearer abc"]
)
def test_auth_2_malformed_authorization_header(client: TestClient, header: str) -> None:
    assert_error(get(client, RUNNING_TASK, {"Authorization": header}), 401, auth.BAD_HEADER_FORMAT)


@pytest.mark.parametrize("scheme", ["bearer ", "BEARER ", "Bearer   "])
def test_auth_2_any_case_and_any_run_of_spaces(
    client: TestClient, bearer: Bearer, scheme: str
) -> None:
    token = bearer()["Authorization"].split(" ")[1]
    assert get(client, RUNNING_TASK, {"Authorization": scheme + token}).status_code == 200


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(org: str = ACME, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "nico-dev",
        "aud": "nico-api",
        "sub": "someone",
        "iat": now,
        "exp": now + 600,
        "org": org,
        "roles": ["PROVIDER_ADMIN"],
    }
    claims.update(overrides)
    return claims


def _hostile_tokens(issuer: DevIssuer) -> dict[str, str]:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = issuer.issue(ACME, ["PROVIDER_ADMIN"])
    header, payload, signature = good.split(".")
    now = int(time.time())
    return {
        "expired": jwt.encode(
            _claims(exp=now - 3600, iat=now - 7200), issuer.private_key, algorithm="RS256"
        ),
        "other-key": jwt.encode(_claims(), other_key, algorithm="RS256"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        "wrong-issuer": jwt.encode(
            _claims(iss="someone-else"), issuer.private_key, algorithm="RS256"
        ),
        "wrong-audience": jwt.encode(_claims(aud="other"), issuer.private_key, algorithm="RS256"),
        "no-exp": jwt.encode(
            {k: v for k, v in _claims().items() if k != "exp"},
            issuer.private_key,
            algorithm="RS256",
        ),
        "not-yet-valid": jwt.encode(_claims(nbf=now + 3600), issuer.private_key, algorithm="RS256"),
        "tampered": f"{header}.{_b64(_claims(roles=['PROVIDER_ADMIN', 'X']))}.{signature}",
        "truncated": good[: len(good) // 2],
        "garbage": "not-a-jwt",
        "non-json-header": f"{base64.urlsafe_b64encode(b'{oops').decode()}.{payload}.{signature}",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "other-key",
        "alg-none",
        "wrong-issuer",
        "wrong-audience",
        "no-exp",
        "not-yet-valid",
        "tampered",
        "truncated",
        "garbage",
        "non-json-header",
    ],
)
def test_auth_3_unverifiable_token(client: TestClient, issuer: DevIssuer, kind: str) -> None:
    token = _hostile_tokens(issuer)[kind]
    assert_error(
        get(client, RUNNING_TASK, {"Authorization": f"Bearer {token}"}), 401, auth.INVALID_TOKEN
    )


def test_authentication_comes_before_validation(client: TestClient) -> None:
    response = get(client, "not-a-uuid", {}, site=None, unknown="1")
    assert_error(response, 401, auth.MISSING_HEADER)


# --- get-task-1 to get-task-3: the query and the body ------------------------------------------


@BOTH_PATHS
def test_get_task_1_unknown_query_parameter(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = get(client, RUNNING_TASK, bearer(), rack=rack, pageSize="10")
    assert_error(response, 400, "Unknown query parameter specified in request: pageSize")


@BOTH_PATHS
@pytest.mark.parametrize("site", [None, ""], ids=["missing", "empty"])
def test_get_task_3_missing_site_id(
    client: TestClient, bearer: Bearer, rack: bool, site: str | None
) -> None:
    response = get(client, RUNNING_TASK, bearer(), site=site, rack=rack)
    assert_error(response, 400, "siteId query parameter is required")


@BOTH_PATHS
@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b"x"), ("application/json", b"[1]"), ("application/xml", b"<a/>")],
)
def test_get_task_2_a_body_that_cannot_be_bound_fails_the_bind(
    client: TestClient, bearer: Bearer, rack: bool, content_type: str, body: bytes
) -> None:
    # Production binds the query, then the body (Echo's binder): between the unknown keys and
    # the required siteId, before membership.
    path = f"/v2/org/{ACME}/nico/{'rack/' if rack else ''}task/{RUNNING_TASK}"

    def get_with_body(
        headers: dict[str, str], sent: bytes = body, sent_as: str = content_type, **query: str
    ):
        headers = {**headers, "Content-Type": sent_as}
        return client.request("GET", path, params=query, headers=headers, content=sent)

    message = "Failed to parse request data"
    unknown = "Unknown query parameter specified in request: foo"
    assert_error(get_with_body(bearer(), foo="1"), 400, unknown)
    assert_error(get_with_body(bearer()), 400, message)
    assert_error(get_with_body(bearer(GLOBEX), siteId=ACME_SITE), 400, message)
    assert_error(get_with_body(bearer(), siteId=ACME_SITE), 400, message)
    # A JSON object binds (its unknown fields are ignored): the task is read.
    bound = get_with_body(bearer(), b'{"anything": 1}', "application/json", siteId=ACME_SITE)
    assert bound.status_code == 200, bound.text


def test_the_query_comes_before_membership(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer(GLOBEX), site=None, foo="1")
    assert_error(response, 400, "Unknown query parameter specified in request: foo")
    response = get(client, RUNNING_TASK, bearer(GLOBEX), site=None)
    assert_error(response, 400, "siteId query parameter is required")


def test_the_first_of_repeated_site_ids_is_read(client: TestClient, bearer: Bearer) -> None:
    response = client.get(
        task_path(RUNNING_TASK) + f"?siteId={ACME_SITE}&siteId=nope", headers=bearer()
    )
    assert response.status_code == 200, response.text


def test_org_is_lower_cased_before_any_check(client: TestClient, bearer: Bearer) -> None:
    assert get(client, RUNNING_TASK, bearer(), org="ACME-INC").status_code == 200
    response = get(client, RUNNING_TASK, bearer(GLOBEX), org="ACME-INC")
    assert_error(response, 403, f"Failed to validate membership for org: {ACME}")


# --- get-task-5 to get-task-7: the caller and the org ------------------------------------------


@BOTH_PATHS
def test_get_task_5_member_of_another_org(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = get(client, RUNNING_TASK, bearer(GLOBEX), rack=rack)
    assert_error(response, 403, f"Failed to validate membership for org: {ACME}")


@pytest.mark.parametrize(
    "roles",
    [
        ("TENANT_ADMIN",),
        ("NICO_TENANT_ADMIN",),
        ("A_B_PROVIDER_ADMIN",),
        ("provider_admin",),
        ("PROVIDER_ADMIN\n",),
        ("NICO_PROVIDER_ADMIN\n",),
        (" PROVIDER_ADMIN",),
    ],
)
def test_get_task_6_no_provider_admin_role(
    client: TestClient, bearer: Bearer, roles: tuple[str, ...]
) -> None:
    response = get(client, RUNNING_TASK, bearer(ACME, *roles))
    assert_error(response, 403, "User does not have Provider Admin role with org")


def test_get_task_6_comes_before_provider_lookup(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer("initech", "TENANT_ADMIN"), org="initech")
    assert_error(response, 403, "User does not have Provider Admin role with org")


def test_get_task_7_org_without_infrastructure_provider(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer("initech"), org="initech")
    assert_error(response, 400, "Failed to retrieve Infrastructure Provider for org")


# --- get-task-8 to get-task-16: the task id, the site, the task --------------------------------


@BOTH_PATHS
def test_get_task_8_task_id_not_a_uuid(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = get(client, "zzz", bearer(), rack=rack)
    assert_error(response, 400, "Invalid Task ID specified in URL")


def test_get_task_8_comes_before_site_checks(client: TestClient, bearer: Bearer) -> None:
    assert_error(get(client, "zzz", bearer(), site="nope"), 400, "Invalid Task ID specified in URL")


@BOTH_PATHS
@pytest.mark.parametrize(
    "task_id",
    [
        "+22423ac-1fbd-4d60-8093-20164fbc635b",
        "e22423ac-1fbd-4d60-8093-20164fbc635\u0665",
        "e22423ac_1fbd_4d60_8093_20164fbc635b",
        "e22423ac-1fbd-4d60-8093-20164fbc635b%0A",
    ],
    ids=["plus-sign", "arabic-digit", "underscores", "newline"],
)
def test_get_task_8_only_ascii_uuid_forms(
    client: TestClient, bearer: Bearer, rack: bool, task_id: str
) -> None:
    response = get(client, task_id, bearer(), rack=rack)
    assert_error(response, 400, "Invalid Task ID specified in URL")


def test_get_task_8_other_uuid_spellings_are_the_same_task(
    client: TestClient, bearer: Bearer
) -> None:
    for spelling in (RUNNING_TASK.upper(), f"{{{RUNNING_TASK}}}", RUNNING_TASK.replace("-", "")):
        response = get(client, spelling, bearer())
        assert response.status_code == 200, spelling
        assert response.json()["id"] == RUNNING_TASK


@pytest.mark.parametrize(
    "site",
    [
        "nope",
        "5518ae98-48f4-47c1-b4d3",
        " 518ae98-48f4-47c1-b4d3-7b3747fa4d0c",
        "+518ae98-48f4-47c1-b4d3-7b3747fa4d0c",
    ],
)
def test_get_task_9_site_id_not_a_uuid(client: TestClient, bearer: Bearer, site: str) -> None:
    response = get(client, RUNNING_TASK, bearer(), site=site)
    assert_error(response, 400, "Failed to validate Site specified in request: invalid ID")


def test_get_task_10_site_does_not_exist(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer(), site="00000000-0000-4000-8000-000000000000")
    assert_error(response, 400, "Site specified in request does not exist")


@BOTH_PATHS
def test_get_task_12_site_of_another_provider(
    client: TestClient, bearer: Bearer, rack: bool
) -> None:
    response = get(client, RUNNING_TASK, bearer(), site=GLOBEX_SITE, rack=rack)
    assert_error(
        response, 403, "Site specified in request doesn't belong to current org's Provider"
    )


def test_get_task_13_site_without_flow(client: TestClient, bearer: Bearer) -> None:
    response = get(client, RUNNING_TASK, bearer(), site=ACME_LAB_SITE)
    assert_error(response, 412, "Site does not have NICo Flow enabled")


@BOTH_PATHS
def test_get_task_16_no_such_task(client: TestClient, bearer: Bearer, rack: bool) -> None:
    response = get(client, "00000000-0000-4000-8000-000000000000", bearer(), rack=rack)
    assert_error(response, 404, "Task not found")


def test_get_task_16_task_at_another_site_of_the_same_provider(
    client: TestClient, bearer: Bearer
) -> None:
    assert get(client, SITE_2_TASK, bearer(), site=ACME_SITE_2).status_code == 200
    assert_error(get(client, SITE_2_TASK, bearer(), site=ACME_SITE), 404, "Task not found")


# --- get-task-15 (storage) and other failures: always the envelope -----------------------------


@pytest.mark.slow  # waits on the clock
def test_get_task_15_storage_unreachable(settings: Settings, bearer: Bearer) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    with create_app(
        settings.model_copy(update={"database_url": unreachable})
    ).test_client() as client:
        response = get(client, RUNNING_TASK, bearer())
    assert_error(response, 503, "Task storage is temporarily unavailable")
    assert response.headers["retry-after"] == "5"


def test_unexpected_error_is_a_bare_500(
    client: TestClient, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(_record: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(schemas.Task, "from_record", explode)
    response = get(client, RUNNING_TASK, bearer())
    assert_error(response, 500, "Internal server error")
    assert "secret" not in response.text and "Traceback" not in response.text


def test_unknown_path_is_an_envelope(client: TestClient, bearer: Bearer) -> None:
    assert_error(client.get("/v2/org/acme-inc/nico/nothing", headers=bearer()), 404, "Not Found")


def test_wrong_method_is_an_envelope(client: TestClient, bearer: Bearer) -> None:
    response = client.delete(
        task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=bearer()
    )
    assert_error(response, 405, "Method Not Allowed")


def test_org_with_a_newline_reaches_the_api(client: TestClient, bearer: Bearer) -> None:
    response = client.get(
        "/v2/org/acme%0Ainc/nico/task/" + RUNNING_TASK,
        params={"siteId": ACME_SITE},
        headers=bearer(),
    )
    assert_error(response, 403, "Failed to validate membership for org: acme\ninc")


def test_the_documented_examples_are_what_the_server_answers(
    client: TestClient, bearer: Bearer
) -> None:
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    answer = get(client, RUNNING_TASK, bearer()).json()
    # The README's shortened answer: every field it shows before the report, as sent.
    shown = readme.split("Its real output")[1].split('"report"')[0]
    fields = dict(re.findall(r'"(\w+)":("[^"]*"|null)', shown))
    assert fields and {k: json.loads(v) for k, v in fields.items()} == {
        k: answer[k] for k in fields
    }
    assert '"message":"Request is missing authorization header"' in readme
    readme = (root / "docs" / "operations-and-errors.md").read_text()
    example = re.search(
        r"Its real output \(pretty-printed here\):\n\n```json\n(.*?)```", readme, re.S
    )
    assert answer == json.loads(example.group(1))
    anonymous = re.search(
        r"Without a token the same request answers:\n\n```\n(.*?)```", readme, re.S
    )
    status, content_type, _, body = anonymous.group(1).strip().split("\n")
    response = get(client, RUNNING_TASK, {})
    assert status == f"HTTP/1.1 {response.status_code} Unauthorized"
    assert content_type == f"content-type: {response.headers['content-type']}"
    assert body + "\n" == response.text


@pytest.mark.parametrize(
    "path", [f"/v2/org/{ACME}/nico/task/", "/healthz/", f"/v2/org/{ACME}/nico/task/{RUNNING_TASK}/"]
)
def test_a_trailing_slash_is_404_never_a_redirect(
    client: TestClient, bearer: Bearer, path: str
) -> None:
    response = client.get(
        path,
        params={"siteId": ACME_SITE},
        headers={**bearer(), "Host": "elsewhere.example", "X-Forwarded-Proto": "https"},
        follow_redirects=False,
    )
    assert_error(response, 404, "Not Found")
    assert "location" not in response.headers


def test_reads_go_on_while_a_writer_holds_the_sqlite_database(
    client: TestClient, bearer: Bearer, engine
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's readers never wait for writers")
    writer = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        # A large load in progress: its pages spill to the database file before it commits.
        writer.execute("PRAGMA cache_size=-16")
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany(
            'INSERT INTO "user" (id, issuer, subject, created, updated) VALUES (?, ?, ?, ?, ?)',
            [
                (uuid.uuid4().hex, "load", "x" * 1000 + str(n), "2026-01-01", "2026-01-01")
                for n in range(2000)
            ],
        )
        started = time.monotonic()
        assert get(client, RUNNING_TASK, bearer()).status_code == 200
        assert time.monotonic() - started < 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_task_is_translated_off_the_event_loop(
    storage: Storage, client: TestClient, bearer: Bearer, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = "0b9f5d0e-5d7e-4f53-9b0c-7d1f4f2f7a12"
    steps = [
        {"component_type": f"Compute-{n}", "status": "completed", "error": "e" * 100}
        for n in range(5000)
    ]
    report = {"version": 1, "stages": [{"number": 1, "status": "completed", "steps": steps}]}
    fixture.load(
        storage,
        fixture.FixtureFile.model_validate(
            {
                "tasks": [
                    {"id": task_id, "site_id": ACME_SITE, "status": "completed", "report": report}
                ]
            }
        ),
    )
    decoded_on_loop: list[bool] = []
    from_record = schemas.Task.from_record

    def recording(record):
        try:
            asyncio.get_running_loop()
            decoded_on_loop.append(True)
        except RuntimeError:
            decoded_on_loop.append(False)
        return from_record(record)

    monkeypatch.setattr(schemas.Task, "from_record", recording)
    response = get(client, task_id, bearer())
    assert response.status_code == 200
    assert len(response.json()["report"]["stages"][0]["steps"]) == 5000
    assert get(client, RUNNING_TASK, bearer()).status_code == 200
    # A large report is translated in a worker thread, a small one on the event loop.
    assert decoded_on_loop == [False, True]
