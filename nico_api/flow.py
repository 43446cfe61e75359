"""NICo Flow's vocabulary: the task statuses it stores and what each set of them means, and the
statuses of a report's stages and steps. Storage and the wire format both read it from here."""

from __future__ import annotations

from typing import Literal

# Every status Flow stores for a task; `waiting` is a task queued behind another on its rack.
STATUSES = ("unknown", "pending", "waiting", "running", "completed", "failed", "terminated")
# A task that is still to run or running: the REST API's Pending or Running.
ACTIVE_STATUSES = ("pending", "waiting", "running")
# A task that has finished; a terminated one is cancelled already, the others never can be.
FINISHED_STATUSES = ("completed", "failed", "terminated")
NOT_CANCELLABLE_STATUSES = ("completed", "failed")
# What cancelling writes.
CANCELLED_STATUS = "terminated"
CANCELLED_MESSAGE = "Cancelled by user"

# The status of a report's stage or step, in Flow's snake_case report document.
PhaseStatus = Literal["pending", "running", "completed", "failed", "skipped"]
