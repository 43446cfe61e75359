"""Operation handlers, found by operationId: `get-task` is `get_task`."""

from handlers.health import get_health, get_readiness
from handlers.spec import get_openapi
from handlers.task import (
    cancel_rack_task,
    cancel_task,
    get_all_tasks,
    get_rack_task,
    get_rack_tasks,
    get_task,
    get_tray_tasks,
)
from handlers.user import get_user

__all__ = [
    "cancel_rack_task",
    "cancel_task",
    "get_all_tasks",
    "get_health",
    "get_openapi",
    "get_rack_task",
    "get_rack_tasks",
    "get_readiness",
    "get_task",
    "get_tray_tasks",
    "get_user",
]
