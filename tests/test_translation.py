"""Translation of Flow's stored records into the API's Task."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nico_api import vocabulary
from nico_api.storage import models
from nico_api.wire.schemas import FLOW_STATUS, Task, TaskReportV1, TaskStatus, rest_status


@pytest.mark.parametrize(
    ("stored", "status"),
    [
        ("unknown", TaskStatus.UNKNOWN),
        ("pending", TaskStatus.PENDING),
        ("waiting", TaskStatus.PENDING),
        ("running", TaskStatus.RUNNING),
        ("completed", TaskStatus.SUCCEEDED),
        ("failed", TaskStatus.FAILED),
        ("terminated", TaskStatus.TERMINATED),
        ("paused", TaskStatus.UNKNOWN),
        ("", TaskStatus.UNKNOWN),
        ("Running", TaskStatus.UNKNOWN),
    ],
)
def test_flow_status_maps_to_rest_status(stored: str, status: TaskStatus) -> None:
    assert rest_status(stored) is status


def test_flow_vocabulary_and_the_wire_agree() -> None:
    # Every stored status has a REST status; the active ones are exactly Pending and Running.
    assert tuple(FLOW_STATUS) == vocabulary.STATUSES
    active = {
        s for s in vocabulary.STATUSES if rest_status(s) in (TaskStatus.PENDING, TaskStatus.RUNNING)
    }
    assert active == set(vocabulary.ACTIVE_STATUSES)
    assert set(vocabulary.FINISHED_STATUSES) == set(vocabulary.STATUSES) - active - {"unknown"}
    assert vocabulary.CANCELLED_STATUS in vocabulary.FINISHED_STATUSES
    assert not set(vocabulary.NOT_CANCELLABLE_STATUSES) & {vocabulary.CANCELLED_STATUS, *active}


FLOW_REPORT = {
    "version": 1,
    "error": "stage 2 failed",
    "stages": [
        {
            "number": 2,
            "status": "failed",
            "started_at": "2026-11-02T11:00:00+02:00",
            "finished_at": "2026-11-02T09:30:00",
            "error": "stage 2 failed",
            "steps": [
                {
                    "component_type": "Compute",
                    "status": "failed",
                    "total_components": 18,
                    "completed_components": 16,
                    "failed_components": 2,
                    "error": "2 trays unreachable",
                    "flow_internal_field": "ignored",
                }
            ],
        }
    ],
}


def test_snake_case_report_becomes_camel_case() -> None:
    report = TaskReportV1.from_stored(FLOW_REPORT)
    assert report is not None
    assert report.model_dump(mode="json") == {
        "version": 1,
        "error": "stage 2 failed",
        "stages": [
            {
                "number": 2,
                "status": "failed",
                # Offsets become UTC; a time without an offset was UTC already.
                "startedAt": "2026-11-02T09:00:00Z",
                "finishedAt": "2026-11-02T09:30:00Z",
                "error": "stage 2 failed",
                "steps": [
                    {
                        "componentType": "Compute",
                        "status": "failed",
                        "totalComponents": 18,
                        "succeededComponents": 16,
                        "failedComponents": 2,
                        "error": "2 trays unreachable",
                    }
                ],
            }
        ],
    }


def test_empty_error_text_is_omitted() -> None:
    report = TaskReportV1.from_stored(
        {
            "version": 1,
            "error": "",
            "stages": [
                {
                    "number": 1,
                    "status": "completed",
                    "error": "",
                    "steps": [{"component_type": "Compute", "status": "completed", "error": ""}],
                }
            ],
        }
    )
    assert report is not None
    assert report.model_dump(mode="json") == {
        "version": 1,
        "stages": [
            {
                "number": 1,
                "status": "completed",
                # The counters are always sent, 0 included.
                "steps": [
                    {
                        "componentType": "Compute",
                        "status": "completed",
                        "totalComponents": 0,
                        "succeededComponents": 0,
                        "failedComponents": 0,
                    }
                ],
            }
        ],
    }


def test_report_stored_as_json_text_is_read() -> None:
    report = TaskReportV1.from_stored('{"version": 1, "stages": []}')
    assert report is not None and report.model_dump(mode="json") == {"version": 1, "stages": []}


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "{not json",
        b"\xff\xfe",
        "[]",
        42,
        [FLOW_REPORT],
        {"stages": []},
        {"version": 2, "stages": []},
        {"version": "1", "stages": []},
        {"version": True, "stages": []},
        {"version": 1},
        {"version": 1, "stages": [{"number": 1, "status": "done", "steps": []}]},
        {"version": 1, "stages": [{"number": "1", "status": "running", "steps": []}]},
        {"version": 1, "stages": [{"number": 1, "status": "running", "steps": [{}]}]},
        {
            "version": 1,
            "stages": [{"number": 1, "status": "running", "steps": [], "started_at": 1767225600}],
        },
        {
            "version": 1,
            "stages": [{"number": 1, "status": "running", "steps": [], "started_at": "yesterday"}],
        },
        {
            "version": 1,
            "stages": [
                {
                    "number": 1,
                    "status": "running",
                    "steps": [],
                    "started_at": "9999-12-31T23:59:59-01:00",
                }
            ],
        },
        {
            "version": 1,
            "stages": [
                {
                    "number": 1,
                    "status": "running",
                    "steps": [],
                    "finished_at": "0001-01-01T00:00:00+01:00",
                }
            ],
        },
        {
            "version": 1,
            "stages": [
                {
                    "number": 1,
                    "status": "running",
                    "steps": [
                        {"component_type": "Compute", "status": "running", "total_components": -1}
                    ],
                }
            ],
        },
        {
            "version": 1,
            "stages": [
                {
                    "number": 1,
                    "status": "running",
                    "steps": [{"componentType": "Compute", "status": "running"}],
                }
            ],
        },
    ],
)
def test_unusable_report_is_dropped(stored: object) -> None:
    assert TaskReportV1.from_stored(stored) is None


def _record(**overrides: object) -> models.Task:
    values: dict[str, object] = {
        "id": uuid.UUID("e22423ac-1fbd-4d60-8093-20164fbc635b"),
        "site_id": uuid.uuid4(),
        "description": "Firmware update",
        "message": "",
        "status": "waiting",
        "applied_rule_id": None,
        "report": None,
        "created_at": datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 2, 10, 0, 0, 250000, tzinfo=UTC),
        "started_at": None,
        "finished_at": None,
    }
    values.update(overrides)
    return models.Task(**values)


def test_task_from_record_keeps_nulls_and_omits_missing_report() -> None:
    body = Task.from_record(_record()).model_dump(mode="json")
    assert body == {
        "id": "e22423ac-1fbd-4d60-8093-20164fbc635b",
        "status": "Pending",
        "description": "Firmware update",
        "message": "",
        "ruleId": None,
        "started": None,
        "finished": None,
        "created": "2026-11-02T09:00:00Z",
        # As Go's RFC3339Nano writes it: no trailing zeros.
        "updated": "2026-11-02T10:00:00.25Z",
    }


def test_task_from_record_with_report_and_times() -> None:
    rule = uuid.uuid4()
    plus_two = timezone(timedelta(hours=2))
    task = Task.from_record(
        _record(
            status="completed",
            applied_rule_id=rule,
            report=FLOW_REPORT,
            started_at=datetime(2026, 11, 2, 11, 0, tzinfo=plus_two),
            finished_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
        )
    ).model_dump(mode="json")
    assert task["status"] == "Succeeded"
    assert task["ruleId"] == str(rule)
    assert task["started"] == "2026-11-02T09:00:00Z"
    assert task["finished"] == "2026-11-02T09:30:00Z"
    assert task["report"]["stages"][0]["steps"][0]["componentType"] == "Compute"


def test_a_stage_numbered_below_1_makes_the_report_unusable() -> None:
    stored = {"version": 1, "stages": [{"number": 0, "status": "running", "steps": []}]}
    assert TaskReportV1.from_stored(stored) is None


def test_years_before_1000_are_written_with_four_digits() -> None:
    from datetime import UTC, datetime

    from nico_api.wire.schemas import go_time

    assert go_time(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("microsecond", "written"),
    [(0, ""), (1, ".000001"), (120, ".00012"), (450_000, ".45"), (999_999, ".999999")],
)
def test_fractional_seconds_are_written_without_trailing_zeros(
    microsecond: int, written: str
) -> None:
    from datetime import UTC, datetime

    from nico_api.wire.schemas import go_time

    value = datetime(2026, 11, 30, 1, 2, 3, microsecond, tzinfo=UTC)
    assert go_time(value) == f"2026-11-30T01:02:03{written}Z"
