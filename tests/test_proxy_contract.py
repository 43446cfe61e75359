"""The proxy's verdicts on single exchanges, decided from openapi.yaml without a network: what
the server accepts passes, and each broken rule is named with what was seen."""

from __future__ import annotations

import json

import pytest

from nico_api.config import SPEC_PATH
from nico_api.proxy.contract import Answered, Contract, Sent
from tests.demo import ACME, ACME_SITE, RUNNING_TASK, task_path

BEARER = {"authorization": "Bearer any"}
TASK = {
    "id": RUNNING_TASK,
    "status": "Running",
    "description": "",
    "message": "",
    "ruleId": None,
    "started": "2026-11-02T09:00:05Z",
    "finished": None,
    "created": "2026-11-02T09:00:00Z",
    "updated": "2026-11-02T09:00:00Z",
}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.from_path(SPEC_PATH)


def _get(path: str, query: str = "") -> Sent:
    return Sent("GET", path, query, BEARER, b"")


def _rules(violations: list) -> list[tuple[str, str, str]]:
    return [(v.side, v.rule, v.seen) for v in violations]


def test_query_values_read_as_the_server_reads_them(contract: Contract) -> None:
    checked = contract.check_request(
        _get(f"/v2/org/{ACME}/nico/task", f"siteId={ACME_SITE}&activeOnly=1&pageSize=")
    )
    assert checked.label == "get-all-tasks"
    assert checked.violations == []
    checked = contract.check_request(
        _get(f"/v2/org/{ACME}/nico/task", f"siteId={ACME_SITE}&pageSize=101&activeOnly=yes")
    )
    assert _rules(checked.violations) == [
        ("client", "parameter-invalid", "activeOnly='yes': not a boolean"),
        ("client", "parameter-invalid", "pageSize='101': fails maximum 100"),
    ]


def test_body_keys_in_any_case_and_nulls_as_absent(contract: Contract) -> None:
    path = f"/v2/org/{ACME}/nico/rack/power"
    body = json.dumps({"SITEID": ACME_SITE, "State": "On", "ruleId": None}).encode()
    checked = contract.check_request(Sent("PATCH", path, "", {**BEARER, **JSON}, body))
    assert checked.violations == []
    checked = contract.check_request(
        Sent("PATCH", path, "", {**BEARER, **JSON}, b'{"siteId": 5, "state": "Up"}')
    )
    assert _rules(checked.violations) == [
        ("client", "body-schema", "/siteId: number, not string"),
        ("client", "body-schema", "/state: matches none of its 2 forms"),
    ]


def test_a_task_answer_and_its_rules(contract: Contract) -> None:
    checked = contract.check_request(_get(task_path(RUNNING_TASK), f"siteId={ACME_SITE}"))
    ok = Answered(200, JSON, json.dumps(TASK).encode())
    assert contract.check_answer(checked, ok) == []
    other = {**TASK, "id": ACME_SITE, "started": "09:00"}
    wrong = contract.check_answer(checked, Answered(200, JSON, json.dumps(other).encode()))
    assert _rules(wrong) == [
        ("server", "body-schema", "/started: not a date-time"),
        ("server", "task-id", f"{ACME_SITE} for {RUNNING_TASK}"),
    ]
    teapot = contract.check_answer(checked, Answered(418, {}, b"short and stout"))
    assert _rules(teapot) == [
        ("server", "error-envelope", "418 no Content-Type"),
        ("server", "status-undeclared", "418"),
    ]


@pytest.mark.parametrize(
    ("query", "page", "on_page", "broken"),
    [
        ("", {"pageNumber": 1, "pageSize": 20, "total": 3}, 3, None),
        ("pageNumber=2&pageSize=2", {"pageNumber": 2, "pageSize": 2, "total": 3}, 1, None),
        ("pageNumber=9", {"pageNumber": 9, "pageSize": 20, "total": 3}, 0, None),
        ("pageNumber=0&pageSize=0", {"pageNumber": 1, "pageSize": 20, "total": 0}, 0, None),
        (
            "",
            {"pageNumber": 1, "pageSize": 20, "total": 5},
            2,
            "total 5, page 1 of size 20 holds 2 tasks, not 5",
        ),
        ("pageSize=5", {"pageNumber": 1, "pageSize": 20, "total": 2}, 2, "pageSize 20 for 5 asked"),
    ],
)
def test_pagination_agrees_with_the_page(
    contract: Contract, query: str, page: dict, on_page: int, broken: str | None
) -> None:
    checked = contract.check_request(
        _get(f"/v2/org/{ACME}/nico/task", f"siteId={ACME_SITE}&{query}")
    )
    headers = {**JSON, "x-pagination": json.dumps({**page, "orderBy": None})}
    answer = Answered(200, headers, json.dumps([TASK] * on_page).encode())
    seen = [v.seen for v in contract.check_answer(checked, answer)]
    assert seen == ([] if broken is None else [broken])


def test_a_list_without_its_page_header(contract: Contract) -> None:
    checked = contract.check_request(_get(f"/v2/org/{ACME}/nico/task", f"siteId={ACME_SITE}"))
    answer = Answered(200, JSON, b"[]")
    assert _rules(contract.check_answer(checked, answer)) == [
        ("server", "header-missing", "X-Pagination")
    ]
