"""Names for the ids of the demo data set (nico_api/storage/demo.yaml)."""

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

RULE = "70cca086-04a4-4a0f-800a-b94b8be3a3db"  # sjc-dc1's default firmware update rule
COMPUTE_ONLY_RULE = "0b7c5d8e-3f21-4a96-b8d4-5e6f7a8b9c0d"  # sjc-dc1's power on, compute only

# Racks at sjc-dc1, by the ID requests name them by; R-14 runs a task that never ends.
RACK = "22104159-0ef7-4f6d-8547-bdc30973c666"
RACK_RECORD = "34aec697-9431-4100-913c-72012c5c696b"  # R-14 as Flow stores it
FREE_RACK = "1de9d021-b858-4b75-acf1-687eb024bfc7"  # nothing runs on it
FREE_RACK_RECORD = "25ae67f1-9bdc-4ecd-8490-bfb84d284d92"  # R-15 as Flow stores it
FAILING_RACK = "e08a07cd-900f-4257-9c29-122cb73d60d3"  # a compute tray fails
FAILING_TRAY = "a8cb3ff1-fa0d-4da4-9300-226524922adf"  # that tray, at slot 22
FAILURE = "BMC did not answer after power on"
OTHER_FREE_RACK = "fc2c46e2-ad60-4f24-918a-bfbacff22910"
SITE_2_RACK = "4a0cf518-8a4f-489c-a42f-8880ebadd690"  # B-03 at sjc-dc2
# R-14's first compute tray: by component ID, by BMC MAC address, as Flow stores it.
TRAY = "9830a1ad-df7d-4d9e-88ba-bf08f211af25"
TRAY_MAC = "02:00:5e:01:01:14"
TRAY_RECORD = "3f9c2b7e-5a41-4d8e-9c6b-2e7d1a0f4b13"


def task_path(task_id: str, org: str = ACME, rack: bool = False) -> str:
    return f"/v2/org/{org}/nico/{'rack/' if rack else ''}task/{task_id}"


# Retrieve and cancel answer alike on the task path and its deprecated rack alias.
BOTH_PATHS = pytest.mark.parametrize("rack", [False, True], ids=["task", "rack-task"])
