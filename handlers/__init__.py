"""Operation handlers, found by operationId: `get-task` is `get_task`."""

from nico_api.handlers.health import get_health, get_metrics, get_readiness
from nico_api.handlers.rack import (
    bringup_rack,
    bringup_racks,
    firmware_update_rack,
    firmware_update_racks,
    power_control_rack,
    power_control_racks,
)
from nico_api.handlers.spec import get_openapi
from nico_api.handlers.task import (
    cancel_rack_task,
    cancel_task,
    get_all_tasks,
    get_rack_task,
    get_rack_tasks,
    get_task,
    get_tray_tasks,
)
from nico_api.handlers.tray import (
    firmware_update_tray,
    firmware_update_trays,
    power_control_tray,
    power_control_trays,
)
from nico_api.handlers.user import get_user

__all__ = [
    "bringup_rack",
    "bringup_racks",
    "cancel_rack_task",
    "cancel_task",
    "firmware_update_rack",
    "firmware_update_racks",
    "firmware_update_tray",
    "firmware_update_trays",
    "get_all_tasks",
    "get_health",
    "get_metrics",
    "get_openapi",
    "get_rack_task",
    "get_rack_tasks",
    "get_readiness",
    "get_task",
    "get_tray_tasks",
    "get_user",
    "power_control_rack",
    "power_control_racks",
    "power_control_tray",
    "power_control_trays",
]
