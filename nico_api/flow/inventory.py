"""A Site's inventory as NICo Flow resolves the names a request gives: a rack by its external id
or its name, a tray (component) by its external component id or its BMC's MAC address, with
Flow's errors when a name matches nothing or more than one record."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, or_, select

from nico_api.config import storable
from nico_api.storage.models import Rack, Tray
from nico_api.vocabulary import Code, FlowError

# A MAC address as Flow reads one: six two-digit hex numbers, separated by `:` or `-`.
_MAC = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_NO_ID = "00000000-0000-0000-0000-000000000000"


def mac_address(text: str) -> str | None:
    """A MAC address as stored (lower case, colons), or None when the text is not one."""
    mac = text.strip().lower()
    return mac.replace("-", ":") if _MAC.fullmatch(mac) else None


def resolve_rack(c: Connection, site_id: uuid.UUID, external_id: str) -> uuid.UUID:
    """A Site's rack by the external id production's REST API names it by (the task lists)."""
    rack = None
    if storable(external_id):  # text no database stores names nothing stored
        rack = c.scalar(
            select(Rack.id).where(Rack.site_id == site_id, Rack.external_id == external_id)
        )
    if rack is None:
        raise FlowError(Code.NOT_FOUND, f"rack with external id {external_id} is not found")
    return rack


def resolve_component(
    c: Connection, site_id: uuid.UUID, identifier: str, kind: str | None = None
) -> Row[Any]:
    """Flow's ResolveComponentIdentifier: the one tray of the Site (of type `kind`, if given)
    whose external component id or BMC MAC address is `identifier`."""
    return _components(c, site_id, [identifier], kind)[0]


def target_components(
    c: Connection, site_id: uuid.UUID, identifiers: Sequence[str], kind: str | None = None
) -> list[Row[Any]]:
    """The trays a request names, each resolved as ResolveComponentIdentifier resolves it;
    Flow's error, wrapped as its task manager wraps it, for the first that fails."""
    try:
        return _components(c, site_id, identifiers, kind)
    except _UnresolvedError as exc:
        raise FlowError(
            exc.code,
            f"failed to get component target external_id={exc.identifier}: rpc error: "
            f"code = {exc.code} desc = {exc.message}",
        ) from None


class _UnresolvedError(FlowError):
    """The resolver's error for one of several identifiers, which the task manager wraps."""

    def __init__(self, code: Code, message: str, identifier: str) -> None:
        super().__init__(code, message)
        self.identifier = identifier


def _components(
    c: Connection, site_id: uuid.UUID, identifiers: Iterable[str], kind: str | None
) -> list[Row[Any]]:
    wanted = [i for i in dict.fromkeys(identifiers) if storable(i)]
    macs = {i: mac_address(i) for i in wanted}
    found = c.execute(
        select(Tray.rack_id, Tray.type, Tray.id, Tray.external_id, Tray.bmc_mac)
        .join(Rack, Rack.id == Tray.rack_id)
        .where(
            Rack.site_id == site_id,
            or_(
                Tray.external_id.in_(wanted),
                Tray.bmc_mac.in_([mac for mac in macs.values() if mac]),
            ),
            *([Tray.type == kind] if kind is not None else []),
        )
    ).all()
    rows = []
    for identifier in dict.fromkeys(identifiers):
        if not identifier:
            raise _UnresolvedError(
                Code.INVALID_ARGUMENT, "component identifier is required", identifier
            )
        matches = [
            row
            for row in found
            if row.external_id == identifier
            or (macs.get(identifier) and row.bmc_mac == macs[identifier])
        ]
        named = f'component identifier "{identifier}"'
        if not matches:
            raise _UnresolvedError(Code.NOT_FOUND, f"{named} not found", identifier)
        if len(matches) > 1:
            raise _UnresolvedError(Code.FAILED_PRECONDITION, f"{named} is ambiguous", identifier)
        rows.append(matches[0])
    return rows


def rack_by_external_id(c: Connection, site_id: uuid.UUID, external_id: str) -> uuid.UUID:
    """The rack a request names by its external id, with Flow's error as its task manager
    wraps it."""
    try:
        return resolve_rack(c, site_id, external_id)
    except FlowError as exc:
        raise FlowError(
            exc.code, _rack_target_error(f"Name: ExternalID:{external_id}", exc.message)
        ) from None


def racks_named(c: Connection, site_id: uuid.UUID, names: Sequence[str]) -> list[uuid.UUID]:
    """The racks a request names by name, in its order, each once; Flow's error for the first
    name that matches no rack or several."""
    wanted = list(dict.fromkeys(names))
    if "" in wanted:
        # Flow refuses the target before it looks: a plain error, with no code of its own.
        raise FlowError(Code.UNKNOWN, "convert rack target: rack target name must not be empty")
    found: dict[str, list[uuid.UUID]] = {}
    rows = c.execute(
        select(Rack.name, Rack.id).where(
            Rack.site_id == site_id, Rack.name.in_([n for n in wanted if storable(n)])
        )
    )
    for name, rack in rows:
        found.setdefault(name, []).append(rack)
    racks = []
    for name in wanted:
        matches = found.get(name, [])
        if len(matches) == 1:
            racks.append(matches[0])
            continue
        code, problem = Code.NOT_FOUND, f"rack {name} is not found"
        if matches:
            code = Code.INVALID_ARGUMENT
            problem = f'rack name "{name}" matches multiple racks; use rack id'
        raise FlowError(
            code,
            _rack_target_error(
                f"Name:{name} ExternalID:", f"rpc error: code = {code} desc = {problem}"
            ),
        )
    return racks


def _rack_target_error(identifier: str, error: str) -> str:
    """SubmitTask's wrapping of an inventory error for a rack target."""
    if not error.startswith("rpc error"):
        error = f"rpc error: code = NotFound desc = {error}"
    return (
        f"failed to resolve rack target: failed to get rack by identifier "
        f"{{ID:{_NO_ID} {identifier}}}: {error}"
    )
