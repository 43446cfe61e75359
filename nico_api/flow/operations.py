"""The operations NICo Flow runs, each one declared record: its name, the type of task it makes,
its built-in rule, how its tasks share a rack, and the workflow id the REST API names a request
for it by. A new operation is a record here, its entry in the spec, its handler and its tests.

Also what the REST API hands Flow: a Submission of an operation on named targets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nico_api.flow.rules import CO, PS, SW, Rule, built_in


class Conflict(StrEnum):
    """How a task shares its rack with the rack's other active tasks (Flow's built-in conflict
    rule, manager.Work): power and firmware work exclude each other where they touch the same
    trays, and power work on the power shelves excludes all of both; exclusive work excludes
    every other task on the rack."""

    POWER = "power"
    FIRMWARE = "firmware"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class Operation:
    """One of Flow's operations. `workflow` and `batch_workflow` are the workflow ids of a request
    for one target and for a batch (formatted with `entity`, `target`, `filter`: the lower-case
    entity, the target's id, the filter's hash); `step_progress` says whether its steps report
    per-component progress while they run (firmware alone), or only their start and end."""

    name: str
    task_type: str
    rule: Rule
    conflict: Conflict
    workflow: str
    batch_workflow: str
    step_progress: bool = False

    def workflow_id(self, entity: str, target: str | None, filter_hash: str = "") -> str:
        """The workflow id production coalesces identical requests in flight by."""
        template = self.workflow if target is not None else self.batch_workflow
        return template.format(entity=entity.lower(), target=target, filter=filter_hash)


def _power(name: str, token: str, rule: Rule) -> Operation:
    return Operation(
        name,
        "power_control",
        rule,
        Conflict.POWER,
        f"{{entity}}-power-state-update-{token}-{{target}}",
        f"{{entity}}-power-state-batch-update-{token}-{{filter}}",
    )


# Flow's hardcoded rules (its resolver's last resort): power flows from the shelves through the
# switches to compute, and is taken away in reverse; forced operations verify every component
# type at once after each pass; an AC power cycle is for compute trays only, and a firmware
# upgrade is for compute trays and switches only.
DECLARED = (
    _power("power_on", "on", built_in("Power On", (PS,), (SW,), (CO,))),
    _power("power_off", "off", built_in("Power Off", (CO,), (SW,), (PS,))),
    _power("restart", "cycle", built_in("Restart", (CO,), (SW,), (PS,), (PS,), (SW,), (CO,))),
    _power(
        "force_power_off",
        "forceoff",
        built_in("Force Power Off", (CO,), (SW,), (PS,), (PS, SW, CO)),
    ),
    _power(
        "force_restart",
        "forcecycle",
        built_in(
            "Force Restart", (CO,), (SW,), (PS,), (PS, SW, CO), (PS,), (SW,), (CO,), (PS, SW, CO)
        ),
    ),
    _power("cold_reset", "acpowercycle", built_in("AC Power Cycle", (CO,))),
    Operation(
        "firmware_update",
        "firmware_control",
        built_in("Firmware Upgrade", (CO,), (SW,)),
        Conflict.FIRMWARE,
        "{entity}-firmware-update-{target}",
        "{entity}-firmware-batch-update-{filter}",
        step_progress=True,
    ),
    Operation(
        "bring_up",
        "bring_up",
        built_in("Bring-Up", (PS,), (CO,), (CO,), (SW,), (SW,), (CO,)),
        Conflict.EXCLUSIVE,
        "{entity}-bringup-{target}",
        "{entity}-bringup-batch-{filter}",
    ),
)
BY_NAME = {operation.name: operation for operation in DECLARED}
OPERATIONS = tuple(BY_NAME)
# A stored task whose operation this Flow does not declare (a fixture's, say) is never run
# beside anything: nothing is known of what it touches.
UNDECLARED_CONFLICT = Conflict.EXCLUSIVE


def conflict_of(operation: str) -> Conflict:
    declared = BY_NAME.get(operation)
    return UNDECLARED_CONFLICT if declared is None else declared.conflict


@dataclass(frozen=True)
class TrayFilter:
    """Which of a Site's trays a batch tray operation targets; unset fields match every tray."""

    rack_id: str | None = None
    rack_name: str | None = None
    type: str | None = None
    ids: tuple[str, ...] | None = None
    slot_id: int | None = None


@dataclass(frozen=True)
class Submission:
    """A request for an operation on racks or trays of a Site, as the REST API hands it to Flow.

    At most one way of naming the targets is set: a rack, rack names, a tray, or a tray filter;
    none targets every rack of the Site."""

    site_id: uuid.UUID
    operation: str
    description: str
    information: dict[str, Any]
    rule_id: uuid.UUID | None = None
    rack: str | None = None
    rack_names: tuple[str, ...] | None = None
    tray: str | None = None
    trays: TrayFilter | None = None
    # Identical orders share a workflow id (None: never joined), and join an answer other than
    # the one committed when this order was received (None: not read, never joined).
    workflow_id: str | None = None
    answer_seen: tuple[str, ...] | None = None
