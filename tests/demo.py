"""Names for the ids of the demo data set (nico_api/demo.yaml)."""

import pytest

ACME = "acme-inc"
GLOBEX = "globex"

ACME_SITE = "5518ae98-48f4-47c1-b4d3-7b3747fa4d0c"
ACME_SITE_2 = "42269a84-baf1-4ca3-b99d-dc96a11bb01a"
ACME_LAB_SITE = "35582467-e111-4552-a761-a358f27371fe"  # NICo Flow not enabled
GLOBEX_SITE = "b694576b-644a-438b-8594-d1d332d404b7"

RUNNING_TASK = "e22423ac-1fbd-4d60-8093-20164fbc635b"  # multi-stage report
PENDING_TASK = "754cc669-e823-40b4-89b8-fa639ed31f0a"
WAITING_TASK = "cbac859b-7ad8-4e92-8595-156103d5825b"
COMPLETED_TASK = "cea48e55-e436-4b31-a988-0da3d8a99dd5"
FAILED_TASK = "ca543a07-90e7-466c-85b9-8c213fb156ac"
TERMINATED_TASK = "af10d0cc-e0b2-4eec-b944-420b01ea3407"
UNKNOWN_TASK = "87da22c4-15d5-400c-8837-2424be1c34e8"
SITE_2_TASK = "34aec697-9431-4100-913c-72012c5c696c"
GLOBEX_TASK = "e621a15e-82cc-4fca-a0fc-290202c0be16"

RULE = "70cca086-04a4-4a0f-800a-b94b8be3a3db"


def task_path(task_id: str, org: str = ACME, rack: bool = False) -> str:
    return f"/v2/org/{org}/nico/{'rack/' if rack else ''}task/{task_id}"


# Retrieve and cancel answer alike on the task path and its deprecated rack alias.
BOTH_PATHS = pytest.mark.parametrize("rack", [False, True], ids=["task", "rack-task"])
