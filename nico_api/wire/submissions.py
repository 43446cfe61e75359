"""The requests that create tasks (power control, firmware update, bring-up of racks and trays):
each body validated as production validates it, with its messages and field errors, and what
it asks of Flow (docs/contract.md and docs/flow.md)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from nico_api.flow.operations import Submission, TrayFilter
from nico_api.vocabulary import COMPONENT_TYPES
from nico_api.web.validation import PARSE_FAILED
from nico_api.wire.errors import NICoError

# Production's power states, and the lower-case forms it still accepts.
POWER_STATES = ("On", "Off", "Cycle", "ForceOff", "ForceCycle", "ACPowerCycle")
_LEGACY_STATES = {state.lower(): state for state in POWER_STATES}
# Each state's Flow operation and the words of its task description.
_POWER = {
    "On": ("power_on", "power on"),
    "Off": ("power_off", "power off"),
    "Cycle": ("restart", "power cycle"),
    "ForceOff": ("force_power_off", "force power off"),
    "ForceCycle": ("force_restart", "force power cycle"),
    "ACPowerCycle": ("cold_reset", "AC power cycle"),
}
# govalidator's UUID: lower-case hex only.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The request's flags, by the names Flow stores them under.
FLAG_NAMES = {
    "overrideReadinessCheck": "override_readiness_check",
    "overrideVersionCheck": "override_version_check",
}


@dataclass(frozen=True)
class Order:
    """A validated request: what Flow is asked, and the workflow id production coalesces
    identical requests in flight by (None: never coalesced)."""

    site_id: str
    submission: dict[str, Any]
    workflow_id: str | None

    def for_site(self, site_id: uuid.UUID) -> Submission:
        return Submission(site_id=site_id, **self.submission)


def power(body: dict[str, Any], entity: str, target: str | None, message: str) -> Order:
    """A power control request: a single rack or tray (`target`), or a batch (its filter)."""
    _check_slot_binds(body)
    state = _normalized(body.get("state"))
    fields: dict[str, Any] = {}
    if target is None:
        _site_required_plainly(body, message)
        if entity == "Tray":
            _check_tray_filter(body.get("filter"), message)
    else:
        _site_required(body, fields)
    if not state:
        fields["state"] = "a value is required"
    elif state not in POWER_STATES:
        fields["state"] = f"must be one of [{' '.join(POWER_STATES)}]"
    _rule(body, fields)
    _raise(fields, message)
    operation, words = _POWER[state]
    token = state.lower()
    kind = entity.lower()
    return Order(
        body["siteId"],
        {
            "operation": operation,
            "description": f"API {words} {entity}",
            "information": _flags(body, "overrideReadinessCheck"),
            "rule_id": _rule_id(body),
            **_targets(entity, target, body.get("filter")),
        },
        f"{kind}-power-state-update-{token}-{target}"
        if target is not None
        else f"{kind}-power-state-batch-update-{token}-{_hash(body.get('filter'))}",
    )


def firmware(body: dict[str, Any], entity: str, target: str | None, message: str) -> Order:
    """A firmware update request: a single rack or tray (`target`), or a batch (its filter)."""
    _check_slot_binds(body)
    fields: dict[str, Any] = {}
    _site_required(body, fields)
    _rule(body, fields)
    authentication = body.get("authenticationData")
    if isinstance(authentication, dict) and ("shared" in authentication) == (
        "perComponent" in authentication
    ):
        fields["authenticationData"] = "must set exactly one of shared or perComponent"
    _raise(fields, message)
    if target is None and entity == "Tray":
        _check_tray_filter(body.get("filter"), message)
    # A batch of racks has no targets to check; a single rack's are checked, then ignored.
    targets = (body.get("targets") or []) if entity == "Tray" or target is not None else []
    if "" in targets:
        raise NICoError(400, message, {})  # "targets must not contain empty strings"
    if targets and not body.get("version"):
        raise NICoError(400, message, {})  # "targets requires version to be set"
    if target is not None:
        workflow = f"{entity.lower()}-firmware-update-{target}"
    else:
        workflow = f"{entity.lower()}-firmware-batch-update-{_hash(body.get('filter'))}"
    if body.get("overrideVersionCheck"):
        workflow += "-override-version-check"
    information = _flags(body, "overrideReadinessCheck", "overrideVersionCheck")
    if body.get("version") is not None:
        information["target_version"] = body["version"]
    if entity == "Tray" and targets:
        information["sub_targets"] = targets
    return Order(
        body["siteId"],
        {
            "operation": "firmware_update",
            "description": f"API firmware update {entity}",
            "information": information,
            "rule_id": _rule_id(body),
            **_targets(entity, target, body.get("filter")),
        },
        # Authentication data makes every request its own workflow.
        None if authentication is not None else workflow,
    )


def bring_up(body: dict[str, Any], target: str | None, message: str) -> Order:
    """A rack bring-up request: one rack (`target`), or a batch (its filter)."""
    fields: dict[str, Any] = {}
    _site_required(body, fields)
    _rule(body, fields)
    _raise(fields, message)
    description = body.get("description") or (
        f"API bring up Rack {target}" if target is not None else "API batch bring up Racks"
    )
    return Order(
        body["siteId"],
        {
            "operation": "bring_up",
            "description": description,
            "information": _flags(body, "overrideReadinessCheck"),
            "rule_id": _rule_id(body),
            **_targets("Rack", target, body.get("filter")),
        },
        f"rack-bringup-{target}"
        if target is not None
        else f"rack-bringup-batch-{_hash(body.get('filter'))}",
    )


def _normalized(state: Any) -> str:
    state = state if isinstance(state, str) else ""
    return _LEGACY_STATES.get(state, state) if state in _LEGACY_STATES else state


def _site_required(body: dict[str, Any], fields: dict[str, Any]) -> None:
    if not body.get("siteId"):
        fields["siteId"] = "siteId is required"


def _site_required_plainly(body: dict[str, Any], message: str) -> None:
    # The batch power handlers check the Site id first, as a plain error: no field named.
    if not body.get("siteId"):
        raise NICoError(400, message, {})


def _rule(body: dict[str, Any], fields: dict[str, Any]) -> None:
    rule = body.get("ruleId")
    if rule and not _UUID.fullmatch(rule):
        fields["ruleId"] = "must be a valid UUID"


def _rule_id(body: dict[str, Any]) -> uuid.UUID | None:
    return uuid.UUID(body["ruleId"]) if body.get("ruleId") else None


def _raise(fields: dict[str, Any], message: str) -> None:
    if fields:
        raise NICoError(400, message, fields)


def _flags(body: dict[str, Any], *names: str) -> dict[str, Any]:
    """The request's flags that are set, as Flow stores them (snake_case, only when true)."""
    return {FLAG_NAMES[name]: True for name in names if body.get(name)}


def _check_tray_filter(wanted: Any, message: str) -> None:
    """TrayFilter's validation: the first failing group of rules, by field."""
    if not isinstance(wanted, dict):
        return
    fields: dict[str, Any] = {}
    if wanted.get("rackId") == "":
        fields["rackId"] = "cannot be blank"
    blank = {str(i): "cannot be blank" for i, x in enumerate(wanted.get("ids") or []) if x == ""}
    if blank:
        fields["ids"] = blank
    if wanted.get("type") and wanted["type"] not in COMPONENT_TYPES:
        fields["type"] = f"must be one of {', '.join(COMPONENT_TYPES)}"
    _raise(fields, message)
    rack = wanted.get("rackId") is not None or wanted.get("rackName") is not None
    if wanted.get("rackId") is not None and wanted.get("rackName") is not None:
        _raise({"rackId": "rackId and rackName are mutually exclusive"}, message)
    if rack and wanted.get("ids"):
        _raise({"rackId": "rackId/rackName cannot be combined with ids"}, message)
    slot = wanted.get("slotId")
    if slot is not None and slot < 0:
        _raise({"slotId": "must be >= 0"}, message)
    if slot is not None and not rack:
        _raise({"slotId": "rackId or rackName is required when slotId is set"}, message)


def _check_slot_binds(body: dict[str, Any]) -> None:
    """A slot id is Go's int32: a number out of its range cannot be read into the request."""
    wanted = body.get("filter")
    slot = wanted.get("slotId") if isinstance(wanted, dict) else None
    if isinstance(slot, int) and not -(2**31) <= slot < 2**31:
        raise NICoError(400, PARSE_FAILED)


def _targets(entity: str, target: str | None, wanted: Any) -> dict[str, Any]:
    """How the request names its targets, in Flow's terms."""
    if target is not None:
        return {"rack": target} if entity == "Rack" else {"tray": target}
    wanted = wanted if isinstance(wanted, dict) else {}
    if entity == "Rack":
        names = wanted.get("names")
        return {"rack_names": tuple(names)} if names else {}
    ids = wanted.get("ids")
    return {
        "trays": TrayFilter(
            rack_id=wanted.get("rackId"),
            rack_name=wanted.get("rackName"),
            type=wanted.get("type"),
            ids=tuple(ids) if ids else None,
            slot_id=wanted.get("slotId"),
        )
    }


def _hash(wanted: Any) -> str:
    """Production's request hash of a filter: the first 12 hex digits of its JSON's SHA-256."""
    text = json.dumps(wanted, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
