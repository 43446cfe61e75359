"""Operation handlers, found by operationId: `get-task` is `get_task`."""

from handlers.task import get_rack_task, get_task

__all__ = ["get_rack_task", "get_task"]
