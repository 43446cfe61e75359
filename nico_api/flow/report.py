"""How a task's report evolves while Flow runs it, step by step.

A task's execution is a fixed sequence of steps, numbered from 0: the start (the initial report,
every stage pending), then for each stage its begin and its end, which may fail the task or finish
it; an operation whose steps report progress (firmware) has a step between them, half of each
step's components done. A stage with no targeted component is begun and ended too, its steps
skipped. Each function here takes the stored report and returns the next one; the executor stores
it with the step's number, so that a step is written once whatever happens to the process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from nico_api.vocabulary import first_line, truncated


def steps_per_stage(step_progress: bool) -> int:
    """A stage's steps: begun and ended, with a progress report between them if it has one."""
    return 3 if step_progress else 2


def timestamp(now: datetime) -> str:
    """Flow's report times: RFC 3339 in UTC, to the second."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Outcome:
    """A step's result: the report to store, the task's final status once it has one (and its
    message if it failed), and the stage the step began or ended, if it did either."""

    report: dict[str, Any]
    status: str | None = None
    error: str | None = None
    stage: int | None = None
    event: Literal["begun", "ended"] | None = None


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
        # A stage with no targeted component is pending too: it is begun and ended as the others.
        stages.append({"number": stage["number"], "status": "pending", "steps": steps})
    return {"version": 1, "stages": stages}


def working_stages(report: dict[str, Any]) -> list[int]:
    """The positions of the stages that run, in the order they run (a report stored before
    every stage ran may have skipped some)."""
    return [i for i, stage in enumerate(report["stages"]) if stage["status"] != "skipped"]


def step_count(report: dict[str, Any], step_progress: bool) -> int:
    """How many steps follow the start."""
    return steps_per_stage(step_progress) * len(working_stages(report))


def _copied(report: dict[str, Any]) -> dict[str, Any]:
    """A copy to change: a report is stages of steps of plain values, so a copy three dicts deep
    is whole, and far cheaper than a deep copy on every step of every task."""
    return {
        **report,
        "stages": [
            {**stage, "steps": [dict(step) for step in stage["steps"]]}
            for stage in report["stages"]
        ],
    }


def advance(
    report: dict[str, Any],
    plan: list[dict[str, Any]],
    step: int,
    now: datetime,
    step_progress: bool,
) -> Outcome:
    """The report after step `step` (1 or more) of its execution. Only steps that report
    progress count their components; the others keep both counts at 0."""
    report = _copied(report)
    order = sorted(plan, key=lambda s: s["number"])
    per_stage = steps_per_stage(step_progress)
    position = working_stages(report)[(step - 1) // per_stage]
    stage, planned = report["stages"][position], order[position]
    phase = (step - 1) % per_stage
    at = timestamp(now)
    if phase == 0:
        stage.update(status="running", started_at=at)
        for each in stage["steps"]:
            if each["status"] == "pending":
                each.update(status="running", started_at=at)
        return Outcome(report, stage=stage["number"], event="begun")
    running = [
        (each, planned["steps"][i])
        for i, each in enumerate(stage["steps"])
        if each["status"] == "running"
    ]
    if phase < per_stage - 1:
        for each, plan_step in running:
            succeeding = len(plan_step["components"]) - len(plan_step["failures"])
            each["completed_components"] = succeeding // 2
        return Outcome(report)
    error = None
    for each, plan_step in running:
        failures = plan_step["failures"]
        each["finished_at"] = at
        if step_progress:
            each.update(
                completed_components=len(plan_step["components"]) - len(failures),
                failed_components=len(failures),
            )
        if failures:
            text = truncated(f"component type {each['component_type']} failed: {failures[0]}")
            each.update(status="failed", error=text)
            error = error or text
        else:
            each["status"] = "completed"
    number = stage["number"]
    if error is not None:
        stage.update(status="failed", finished_at=at, error=error)
        report.setdefault("error", error)
        # The workflow's error wraps the stage's with its number; the report keeps it bare.
        message = first_line(f"stage {number} failed: {error}")
        return Outcome(report, "failed", message, number, "ended")
    stage.update(status="completed", finished_at=at)
    last = step == step_count(report, step_progress)
    return Outcome(report, "completed" if last else None, stage=number, event="ended")
