"""The Task resource: retrieve, cancel and list a Site's tasks, each operation's checks in
production's order (docs/contract.md)."""

from __future__ import annotations

from typing import Any, NamedTuple

from nico_api import vocabulary
from nico_api.handlers.checks import as_uuid, check_site, provider_admin, provider_site_and_task
from nico_api.store import Store
from nico_api.web.runtime import Runtime
from nico_api.web.validation import RequestProblems, Step, check_body
from nico_api.wire import schemas
from nico_api.wire.errors import NICoError

Page = tuple[schemas.TaskList, int, dict[str, str]]


async def get_task(
    org: str,
    id_: str,
    token_info: dict[str, Any],
    problems: RequestProblems,
    runtime: Runtime,
    site_id: str = "",
) -> schemas.Task:
    problems.check(Step.QUERY)
    org = provider_admin(org, token_info)
    found = await provider_site_and_task(runtime.store, org, site_id, id_)
    _check_task_id(id_)
    check_site(found, site_id)
    return _task(found.task)


# The deprecated backward-compatible path serves the same operation.
get_rack_task = get_task


async def cancel_task(
    org: str,
    id_: str,
    token_info: dict[str, Any],
    problems: RequestProblems,
    runtime: Runtime,
    body: Any = None,
) -> tuple[schemas.Task, int]:
    # Query parameters are never checked; the body only after the org's provider and the task id.
    org = provider_admin(org, token_info)
    site_id = body.get("siteId") if isinstance(body, dict) else None
    found = await provider_site_and_task(runtime.store, org, site_id, id_)
    _check_task_id(id_)
    check_body(problems, "Failed to validate cancel task request data")
    check_site(found, site_id)
    task = _task(found.task)
    cancelled = await runtime.store.cancel_task(task.id)
    if cancelled.flow_status in vocabulary.NOT_CANCELLABLE_STATUSES:
        # NICo Flow's own words, passed through by the REST layer.
        raise NICoError(
            412, f"task cannot be cancelled: task {task.id} has status {cancelled.flow_status}"
        )
    return _task(cancelled.task), 202


cancel_rack_task = cancel_task


# Connexion passes the lists' query parameters, and its own context, as keywords.
async def get_all_tasks(
    org: str,
    token_info: dict[str, Any],
    problems: RequestProblems,
    runtime: Runtime,
    **query: Any,
) -> Page:
    org = provider_admin(org, token_info)
    problems.check(Step.QUERY)
    return await _page(runtime.store, org, problems, Listing.of(query))


async def get_rack_tasks(
    org: str,
    id_: str,
    token_info: dict[str, Any],
    problems: RequestProblems,
    runtime: Runtime,
    **query: Any,
) -> Page:
    problems.check(Step.QUERY)
    org = provider_admin(org, token_info)
    return await _page(runtime.store, org, problems, Listing.of(query), rack=id_)


async def get_tray_tasks(
    org: str,
    id_: str,
    token_info: dict[str, Any],
    problems: RequestProblems,
    runtime: Runtime,
    **query: Any,
) -> Page:
    problems.check(Step.QUERY)
    org = provider_admin(org, token_info)
    return await _page(runtime.store, org, problems, Listing.of(query), tray=id_)


class Listing(NamedTuple):
    """The shared query parameters of the task lists; a zero page or size means the default."""

    site_id: str = ""
    active_only: bool = False
    include_report: bool = False
    page_number: int = 0
    page_size: int = 0

    @classmethod
    def of(cls, query: dict[str, Any]) -> Listing:
        listing = cls(**{name: query[name] for name in cls._fields if name in query})
        return listing._replace(
            page_number=listing.page_number or 1,
            page_size=listing.page_size or schemas.DEFAULT_PAGE_SIZE,
        )


async def _page(
    store: Store, org: str, problems: RequestProblems, listing: Listing, **component: str
) -> Page:
    found = await provider_site_and_task(store, org, listing.site_id, None)
    site = check_site(found, listing.site_id)
    problems.check(Step.PAGING)
    # A rack or tray is resolved by Flow, as production's Flow resolves it.
    tasks, total = await store.task_page(
        site,
        **component,
        active_only=listing.active_only,
        include_report=listing.include_report,
        page_number=listing.page_number,
        page_size=listing.page_size,
    )
    pagination = schemas.Pagination(
        page_number=listing.page_number, page_size=listing.page_size, total=total
    )
    return schemas.TaskList(tasks), 200, {"X-Pagination": pagination.model_dump_json()}


def _check_task_id(id_: str) -> None:
    if as_uuid(id_) is None:
        raise NICoError(400, "Invalid Task ID specified in URL")


def _task(task: schemas.Task | None) -> schemas.Task:
    if task is None:
        raise NICoError(404, "Task not found")
    return task
