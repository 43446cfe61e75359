"""What the handlers ask of storage, each in one round trip. The task read, the most frequent,
is made on the event loop where the database allows (Storage.read_row), a large report translated
in a worker thread; the rest is read, written and translated in a worker thread, off the event
loop every request shares (a page of tasks holds many reports)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any, NamedTuple

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from nico_api.auth.authenticator import Caller
from nico_api.flow import inventory, manager
from nico_api.flow.operations import Submission
from nico_api.storage import models, queries
from nico_api.storage.db import Storage
from nico_api.storage.errors import StorageDeadlineError
from nico_api.wire import schemas
from nico_api.wire.submissions import Order

log = logging.getLogger(__name__)

# A stored report longer than this (in characters) is decoded in a worker thread.
LARGE_REPORT = 64 * 1024


class SiteRecord(NamedTuple):
    id: uuid.UUID
    infrastructure_provider_id: uuid.UUID
    flow_enabled: bool


class Lookup(NamedTuple):
    """The org's provider, the Site and the task at that Site, each None when absent."""

    provider_id: uuid.UUID | None
    site: SiteRecord | None
    task: schemas.Task | None


class Cancelled(NamedTuple):
    """The task after a cancel, and its stored status (None when it no longer exists)."""

    task: schemas.Task | None
    flow_status: str | None


def lookup_from_row(row: Any) -> Lookup:
    """The lookup a row of queries.PROVIDER_SITE_AND_TASK holds (read by name)."""
    site = (
        None
        if row.site_record_id is None
        else SiteRecord(row.site_record_id, row.site_provider_id, row.site_flow_enabled)
    )
    task = None if row.id is None else schemas.Task.from_record(row)
    return Lookup(row.provider_id, site, task)


class Store:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Requests being submitted, by workflow id: an identical one joins the first.
        self._in_flight: dict[tuple[uuid.UUID, str], asyncio.Future[list[str]]] = {}

    async def lookup(
        self, org: str, site_id: uuid.UUID | None, task_id: uuid.UUID | None
    ) -> Lookup:
        params = {"org": org, "site_id": site_id, "task_id": task_id}
        row = await self.storage.read_row(queries.PROVIDER_SITE_AND_TASK, params)
        if row.report is not None and len(row.report) > LARGE_REPORT:
            # A large report is decoded off the event loop that every request shares.
            return await asyncio.to_thread(lookup_from_row, row)
        return lookup_from_row(row)

    def _lookup(self, params: dict[str, Any]) -> Lookup:
        """The lookup read in the calling thread, through the pool."""
        return lookup_from_row(self.storage.first_row(queries.PROVIDER_SITE_AND_TASK, params))

    async def task_page(
        self, site_id: uuid.UUID, rack: str | None = None, tray: str | None = None, **filters: Any
    ) -> tuple[list[schemas.Task], int]:
        """A page of a Site's tasks (queries.task_page's filters), and the filtered set's size;
        a rack named by its external id, a tray by its component id or BMC MAC address, as
        Flow resolves them (a FlowError when it cannot, which the REST side maps)."""
        return await self.storage.run_in_thread(self._task_page, site_id, rack, tray, filters)

    def _task_page(
        self, site_id: uuid.UUID, rack: str | None, tray: str | None, filters: dict[str, Any]
    ) -> tuple[list[schemas.Task], int]:
        with self.storage.reading() as c:
            if rack is not None:
                filters["rack_id"] = inventory.resolve_rack(c, site_id, rack)
            if tray is not None:
                filters["tray_id"] = inventory.resolve_component(c, site_id, tray).id
            page, count = queries.task_page(site_id, **filters)
            rows = list(c.execute(page))
            total = c.execute(count).scalar_one()
        return [schemas.Task.from_record(row) for row in rows], total

    async def cancel_task(self, task_id: uuid.UUID) -> Cancelled:
        return await self.storage.run_in_thread(self._cancel_task, task_id)

    def _cancel_task(self, task_id: uuid.UUID) -> Cancelled:
        now = models.utcnow()
        with self.storage.connection() as c, c.begin():
            # One conditional update that returns the cancelled task; only a task that had
            # finished already is read again, to say how.
            row = c.execute(queries.CANCEL_TASK, {"task_id": task_id, "now": now}).one_or_none()
            if row is None:
                row = c.execute(queries.TASK_BY_ID, {"task_id": task_id}).one_or_none()
        return Cancelled(*_task_and_status(row))

    async def submit(self, order: Order, site_id: uuid.UUID) -> list[str]:
        """The ids of the tasks Flow makes for the order; an identical order already being
        submitted (the same workflow id) is joined, and answered as it is answered."""
        if order.workflow_id is None:
            return await self._submit(order, site_id)
        # Workflow ids are a Site's own: each Site has its own Flow.
        key = (site_id, order.workflow_id)
        running = self._in_flight.get(key)
        if running is not None:
            _received(order.workflow_id, joined=True)
        else:
            # Joined in this process here; across processes by Flow (manager.submit).
            running = asyncio.ensure_future(self._submit(order, site_id))
            self._in_flight[key] = running
            running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(running)

    async def _submit(self, order: Order, site_id: uuid.UUID) -> list[str]:
        submission = dataclasses.replace(order.for_site(site_id), workflow_id=order.workflow_id)
        return await self.storage.run_in_thread(self._submitted, submission)

    def _submitted(self, submission: Submission) -> list[str]:
        settings = self.storage.settings
        deadline = time.monotonic() + settings.db_request_timeout
        if submission.workflow_id is not None:
            # Received by Flow now: its workflow's answer, read before any lock is waited for.
            with self.storage.reading() as c:
                seen = manager.answer_seen(c, submission.site_id, submission.workflow_id)
            submission = dataclasses.replace(submission, answer_seen=seen)
            _received(submission.workflow_id, joined=False)
        queue = settings.flow_queue_timeout if settings.flow_conflicts == "queue" else None
        with self.storage.connection() as c, c.begin():
            made = manager.submit(c, submission, models.utcnow(), queue)
            if time.monotonic() > deadline:
                # The request has been answered 503 already: nothing it asked for is made.
                raise StorageDeadlineError("the tasks were made after the request's deadline")
            return made

    async def remember_user(self, caller: Caller) -> schemas.User:
        return await self.storage.run_in_thread(self._remember_once_more_on_conflict, caller)

    def _remember_once_more_on_conflict(self, caller: Caller) -> schemas.User:
        try:
            return self._remember_user(caller)
        except IntegrityError:
            # A concurrent first call created the same user; this one now finds it.
            return self._remember_user(caller)

    def _remember_user(self, caller: Caller) -> schemas.User:
        with self.storage.transaction() as session:
            user = session.get(models.User, caller.user_id)
            if user is None:
                now = models.utcnow()
                user = models.User(
                    id=caller.user_id,
                    issuer=caller.issuer,
                    subject=caller.subject,
                    created=now,
                    updated=now,
                )
                session.add(user)
            # Unchanged values make no UPDATE, so `updated` moves only when the claims change.
            for column, value in caller.profile().items():
                setattr(user, column, value)
            session.flush()
            return schemas.User.from_record(user)

    async def ping(self) -> None:
        """Raise a storage error unless the database answers now."""
        await self.storage.run_in_thread(self.storage.ping)


def _received(workflow_id: str, joined: bool) -> None:
    """An order with a workflow id is received: joined to one in flight in this process, or
    (not joined) its workflow's answer read, before it waits for any lock."""
    log.debug("order received", extra={"fields": {"workflow": workflow_id, "joined": joined}})


def _task_and_status(row: Row[Any] | None) -> tuple[schemas.Task | None, str | None]:
    return (None, None) if row is None else (schemas.Task.from_record(row), row.status)
