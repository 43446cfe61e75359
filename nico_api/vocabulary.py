"""NICo Flow's vocabulary: the task statuses it stores and what each set of them means, and the
statuses of a report's stages and steps. Storage and the wire format both read it from here."""

from __future__ import annotations

from typing import Literal

from nico_api.wire.errors import NICoError

# Every status Flow stores for a task; `waiting` is a task queued behind another on its rack.
STATUSES = ("unknown", "pending", "waiting", "running", "completed", "failed", "terminated")
# A task that is still to run or running: the REST API's Pending or Running.
ACTIVE_STATUSES = ("pending", "waiting", "running")
# A task Flow has scheduled or is running: what a rack's queue waits for, and Flow executes.
RUN_STATUSES = ("pending", "running")
# A task that has finished; a terminated one is cancelled already, the others never can be.
FINISHED_STATUSES = ("completed", "failed", "terminated")
NOT_CANCELLABLE_STATUSES = ("completed", "failed")
# What cancelling writes.
CANCELLED_STATUS = "terminated"
CANCELLED_MESSAGE = "Cancelled by user"

# The status of a report's stage or step, in Flow's snake_case report document.
PhaseStatus = Literal["pending", "running", "completed", "failed", "skipped"]

# The kinds of component a rack holds, as Flow names them in rules and reports.
COMPONENT_TYPES = ("Compute", "NVSwitch", "PowerShelf")

# Flow's operations, each of one task type.
POWER_OPERATIONS = (
    "power_on",
    "power_off",
    "restart",
    "force_power_off",
    "force_restart",
    "cold_reset",
)
OPERATIONS = (*POWER_OPERATIONS, "firmware_update", "bring_up")
TASK_TYPES = {
    **dict.fromkeys(POWER_OPERATIONS, "power_control"),
    "firmware_update": "firmware_control",
    "bring_up": "bring_up",
}

# What Flow writes at each transition of a task (docs/flow.md).
PENDING_MESSAGE = "Pending"
QUEUED_MESSAGE = "Queued: waiting for rack to become available"
PROMOTED_MESSAGE = "Promoted: no conflicting active tasks"
EXPIRED_MESSAGE = "Expired: queue timeout reached"
RUNNING_MESSAGE = "Running"
SUCCEEDED_MESSAGE = "Succeeded"
# How many tasks may wait on one rack.
QUEUE_LIMIT = 5
# Flow keeps at most this many bytes of an error's first line as a message.
MESSAGE_BYTES = 512


def first_line(error: str) -> str:
    """An error as Flow stores it in a message: its first line, at most MESSAGE_BYTES bytes."""
    return truncated(error.split("\n", 1)[0])


def truncated(error: str) -> str:
    """An error as Flow stores it in a report: at most MESSAGE_BYTES bytes."""
    return error.encode()[:MESSAGE_BYTES].decode(errors="ignore")


class FlowError(NICoError):
    """Flow's answer, with the HTTP status the REST API maps its gRPC code to."""
