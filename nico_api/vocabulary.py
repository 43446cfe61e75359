"""NICo Flow's vocabulary: the task statuses it stores and what each set of them means, the
statuses of a report's stages and steps, and the outcome codes of its answers. Storage, the wire
format and the REST side all read it from here; it imports nothing of theirs."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

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

# What Flow writes at each transition of a task.
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


class Code(StrEnum):
    """The gRPC code of Flow's answer, as Flow names it in its error text; what each means to a
    REST client is the REST side's to say."""

    INVALID_ARGUMENT = "InvalidArgument"
    NOT_FOUND = "NotFound"
    FAILED_PRECONDITION = "FailedPrecondition"
    RESOURCE_EXHAUSTED = "ResourceExhausted"
    INTERNAL = "Internal"
    # A plain error, with no code of its own: what gRPC reports for it.
    UNKNOWN = "Unknown"


class FlowError(Exception):
    """Flow's answer when it does not do what it was asked: an outcome code and Flow's text."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
