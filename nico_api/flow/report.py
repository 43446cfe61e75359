"""How a task's report evolves while Flow runs it (docs/flow.md), step by step.

A task's execution is a fixed sequence of steps, numbered from 0: the start (the initial report,
every stage pending), then for each stage that has work three steps (begin, progress, end), the
last of which may fail the task or finish it. Each function here takes the stored report and
returns the next one; the executor stores it with the step's number, so that a step is written
once whatever happens to the process."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nico_api.vocabulary import first_line, truncated

# The steps of each stage that has work: begun, half its components done, ended.
STEPS_PER_STAGE = 3


def timestamp(now: datetime) -> str:
    """Flow's report times: RFC 3339 in UTC, to the second."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Outcome:
    """A step's result: the report to store, and the task's final status once it has one."""

    report: dict[str, Any]
    status: str | None = None
    error: str | None = None


def initial(plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Every stage pending; a step with targets pending with its total, one without skipped."""
    stages = []
    for stage in sorted(plan, key=lambda s: s["number"]):
        steps = []
        for step in stage["steps"]:
            total = len(step["components"])
            steps.append(
                {
                    "component_type": step["component_type"],
                    "status": "pending" if total else "skipped",
                    "total_components": total,
                    "completed_components": 0,
                    "failed_components": 0,
                }
            )
        skipped = all(step["status"] == "skipped" for step in steps)
        stages.append(
            {
                "number": stage["number"],
                "status": "skipped" if skipped else "pending",
                "steps": steps,
            }
        )
    return {"version": 1, "stages": stages}


def working_stages(report: dict[str, Any]) -> list[int]:
    """The positions of the stages that have work, in the order they run."""
    return [i for i, stage in enumerate(report["stages"]) if stage["status"] != "skipped"]


def step_count(report: dict[str, Any]) -> int:
    """How many steps follow the start."""
    return STEPS_PER_STAGE * len(working_stages(report))


def advance(
    report: dict[str, Any], plan: list[dict[str, Any]], step: int, now: datetime
) -> Outcome:
    """The report after step `step` (1 or more) of its execution."""
    report = copy.deepcopy(report)
    order = sorted(plan, key=lambda s: s["number"])
    position = working_stages(report)[(step - 1) // STEPS_PER_STAGE]
    stage, planned = report["stages"][position], order[position]
    phase = (step - 1) % STEPS_PER_STAGE
    at = timestamp(now)
    if phase == 0:
        stage.update(status="running", started_at=at)
        for each in stage["steps"]:
            if each["status"] == "pending":
                each.update(status="running", started_at=at)
        return Outcome(report)
    running = [
        (each, planned["steps"][i])
        for i, each in enumerate(stage["steps"])
        if each["status"] == "running"
    ]
    if phase == 1:
        for each, plan_step in running:
            succeeding = len(plan_step["components"]) - len(plan_step["failures"])
            each["completed_components"] = succeeding // 2
        return Outcome(report)
    error = None
    for each, plan_step in running:
        failures = plan_step["failures"]
        each.update(
            completed_components=len(plan_step["components"]) - len(failures),
            failed_components=len(failures),
            finished_at=at,
        )
        if failures:
            text = truncated(f"component type {each['component_type']} failed: {failures[0]}")
            each.update(status="failed", error=text)
            error = error or text
        else:
            each["status"] = "completed"
    if error is not None:
        stage.update(status="failed", finished_at=at, error=error)
        report.setdefault("error", error)
        return Outcome(report, "failed", first_line(error))
    stage.update(status="completed", finished_at=at)
    last = step == step_count(report)
    return Outcome(report, "completed" if last else None)
