"""`make bench`, the mixed load: `nico-api serve --workers 2` and `nico-api flow` on a fresh
database, 16 clients for N seconds reading tasks and lists, creating tasks (rack and tray power,
firmware, bring-up, batches, bursts of identical concurrent orders) and cancelling them.

Then, once every task made is terminal (a bounded wait), the invariants: no 5xx but the
documented queue-full answer (`500 failed to create any tasks`), no transport error, no lost
task (a task id a create answered with that is not stored), no duplicated task (two tasks of
one workflow id in flight at once), no task left active. Exits 1 when one fails. Traffic goes
to 127.0.0.1 only.

    python -m bench.load --backend sqlite|postgresql --seconds 180
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import select

from bench import flow as flow_bench
from bench.run import BIN, POSTGRES_ADMIN, ROOT, publish
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import models
from nico_api.storage.db import Storage
from nico_api.vocabulary import ACTIVE_STATUSES
from tests.processes import free_port

ORG = "acme-inc"  # the demo's provider, which the load's Site belongs to
SITE = str(flow_bench.BENCH_SITE)
QUEUE_FULL = "failed to create any tasks"
CLIENTS = 16
# Identical orders sent at once in a burst, and how often a client sends a burst.
BURST = 8
BURST_SHARE = 0.03
START_SECONDS = 60
SETTLE_SECONDS = 180
REQUEST_SECONDS = 30
POLL_SECONDS = 0.5


@dataclass
class Created:
    """A create request answered 200: its workflow id, when it was sent and answered, the task
    ids it named, and the burst of identical orders it was sent in, if any."""

    workflow: str
    sent: float
    answered: float
    task_ids: list[str]
    burst: int | None = None


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    queue_full: int = 0
    create_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    other_ms: list[float] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)


class Load:
    """The clients' shared state: the racks and trays to aim at, the tasks made so far."""

    def __init__(self, client: httpx.AsyncClient, racks: list[str], seed: int) -> None:
        self.client = client
        self.racks = racks
        self.tally = Tally()
        self.task_ids: list[str] = []
        self.random = random.Random(seed)
        self.bursts = 0

    async def request(
        self, kind: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response | None:
        sent = time.time()
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.tally.transport_errors.append(f"{method} {path}: {exc!r}")
            return None
        elapsed = (time.perf_counter() - started) * 1000
        {"create": self.tally.create_ms, "read": self.tally.read_ms}.get(
            kind, self.tally.other_ms
        ).append(elapsed)
        self.tally.statuses[f"{kind} {response.status_code}"] += 1
        if response.status_code >= 500:
            queue_full = response.status_code == 500 and _message(response) == QUEUE_FULL
            if kind == "create" and queue_full:
                self.tally.queue_full += 1
            else:
                self.tally.server_errors.append(
                    f"{method} {path}: {response.status_code} {response.text[:200]}"
                )
        response.extensions["sent"] = sent
        return response

    async def create(
        self, path: str, body: dict[str, Any], workflow: str, burst: int | None = None
    ) -> None:
        # Bring-up is a POST; power and firmware are PATCHes.
        method = "POST" if path.endswith("/bringup") else "PATCH"
        response = await self.request("create", method, path, {"siteId": SITE, **body})
        if response is not None and response.status_code == 200:
            ids = response.json()["taskIds"]
            self.tally.created.append(
                Created(workflow, response.extensions["sent"], time.time(), ids, burst)
            )
            self.task_ids += ids

    def order(self) -> tuple[str, dict[str, Any], str]:
        """A create request (path, body, its workflow id as production names it)."""
        pick = self.random
        rack = pick.choice(self.racks)
        roll = pick.random()
        if roll < 0.35:
            state = pick.choice(("On", "Off"))
            return (
                f"/rack/{rack}/power",
                {"state": state},
                f"rack-power-state-update-{state.lower()}-{rack}",
            )
        if roll < 0.55:
            tray = f"{rack}-{pick.choice((0, 10, 20, 21))}"
            state = pick.choice(("On", "Off", "Cycle"))
            return (
                f"/tray/{tray}/power",
                {"state": state},
                f"tray-power-state-update-{state.lower()}-{tray}",
            )
        if roll < 0.75:
            # Versions differ, the workflow id does not: production's firmware join.
            version = pick.choice(("1.2.0", "1.3.0"))
            return (
                f"/rack/{rack}/firmware",
                {"version": version},
                f"rack-firmware-update-{rack}",
            )
        if roll < 0.9:
            return f"/rack/{rack}/bringup", {}, f"rack-bringup-{rack}"
        names = sorted(pick.sample(self.racks, 2))
        # bench.flow names rack `bench-n` `B-n`.
        wanted = {"names": ["B-" + name.removeprefix("bench-") for name in names]}
        return (
            "/rack/power",
            {"state": "Cycle", "filter": wanted},
            f"rack-power-state-batch-update-cycle-{json.dumps(wanted, sort_keys=True)}",
        )

    async def client_loop(self, deadline: float) -> None:
        pick = self.random
        prefix = f"/v2/org/{ORG}/nico"
        while time.monotonic() < deadline:
            roll = pick.random()
            if roll < BURST_SHARE:
                path, body, workflow = self.order()
                self.bursts += 1
                await asyncio.gather(
                    *(self.create(prefix + path, body, workflow, self.bursts) for _ in range(BURST))
                )
            elif roll < 0.35:
                path, body, workflow = self.order()
                await self.create(prefix + path, body, workflow)
            elif roll < 0.75 and self.task_ids:
                task = pick.choice(self.task_ids)
                await self.request("read", "GET", f"{prefix}/task/{task}?siteId={SITE}")
            elif roll < 0.92:
                rack = pick.choice(self.racks)
                await self.request(
                    "read",
                    "GET",
                    pick.choice(
                        (
                            f"{prefix}/task?siteId={SITE}&pageSize=20",
                            f"{prefix}/task?siteId={SITE}&activeOnly=true",
                            f"{prefix}/rack/{rack}/task?siteId={SITE}",
                        )
                    ),
                )
            elif self.task_ids:
                task = pick.choice(self.task_ids)
                await self.request(
                    "cancel", "POST", f"{prefix}/task/{task}/cancel", {"siteId": SITE}
                )


def _message(response: httpx.Response) -> str | None:
    try:
        return response.json().get("message")
    except ValueError:
        return None


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for(ready: Callable[[], bool], process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[1]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def stored(storage: Storage, ids: set[str]) -> dict[str, Any]:
    """The stored tasks among `ids`, by id: status and when each stopped being in flight."""
    rows: dict[str, Any] = {}
    wanted = [uuid.UUID(i) for i in ids]
    with storage.connection() as c:
        for start_at in range(0, len(wanted), 500):
            query = select(
                models.Task.id, models.Task.status, models.Task.finished_at, models.Task.updated_at
            ).where(models.Task.id.in_(wanted[start_at : start_at + 500]))
            rows.update({str(row.id): row for row in c.execute(query)})
    return rows


def settle(storage: Storage, ids: set[str]) -> tuple[dict[str, Any], float]:
    """Waits (at most SETTLE_SECONDS) until no task among `ids` is active."""
    started = time.monotonic()
    while True:
        rows = stored(storage, ids)
        active = [r for r in rows.values() if r.status in ACTIVE_STATUSES]
        if not active or time.monotonic() - started > SETTLE_SECONDS:
            return rows, time.monotonic() - started
        time.sleep(POLL_SECONDS)


def duplicates(created: list[Created], racks_of: dict[str, int]) -> list[str]:
    """Orders answered with more tasks than racks they target (a single order's task made
    twice), and tasks named in answers to orders of different workflow ids."""
    found = []
    workflows: dict[str, str] = {}
    for order in created:
        if len(set(order.task_ids)) != len(order.task_ids) or len(order.task_ids) > racks_of.get(
            order.workflow, 1
        ):
            found.append(f"{order.workflow}: {order.task_ids}")
        for task in order.task_ids:
            if workflows.setdefault(task, order.workflow) != order.workflow:
                found.append(f"{task}: {workflows[task]} and {order.workflow}")
    return found


def split_bursts(created: list[Created]) -> tuple[int, int]:
    """Bursts whose orders were all sent before the first was answered, and of those the ones
    answered with more than one set of tasks. The server joins an order received (by its
    handler) before an identical one's answer was committed; under load a burst's later orders
    can reach the handler after that, so a split burst is a figure, not a failure."""
    bursts: dict[int, list[Created]] = {}
    for order in created:
        if order.burst is not None:
            bursts.setdefault(order.burst, []).append(order)
    together = [
        orders
        for orders in bursts.values()
        if len(orders) > 1 and max(o.sent for o in orders) < min(o.answered for o in orders)
    ]
    split = sum(1 for orders in together if len({tuple(sorted(o.task_ids)) for o in orders}) > 1)
    return len(together), split


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def fresh_database(backend: str, instance: Path) -> tuple[str, Callable[[], None]]:
    """A new database for the run, and what drops it."""
    if backend == "sqlite":
        return f"sqlite:///{instance / 'load.db'}", lambda: None
    name = f"nico_load_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


async def drive(port: int, token: str, racks: list[str], seconds: float, seed: int) -> Load:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CLIENTS * BURST)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers=headers,
        timeout=REQUEST_SECONDS,
        limits=limits,
    ) as client:
        load = Load(client, racks, seed)
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(load.client_loop(deadline) for _ in range(CLIENTS)))
    return load


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory(prefix="nico-load-") as directory:
        instance = Path(directory)
        url, drop = fresh_database(args.backend, instance)
        processes: list[subprocess.Popen] = []
        try:
            storage = flow_bench.prepare(url, args.racks, instance)
            racks = [f"bench-{n}" for n in range(args.racks)]
            settings = Settings(instance_dir=instance, database_url=url)
            token = DevIssuer(settings).issue(ORG, ["PROVIDER_ADMIN"], 86400)
            env = {
                **os.environ,
                "NICO_INSTANCE_DIR": str(instance),
                "NICO_DATABASE_URL": url,
                "NICO_FLOW_STEP_SECONDS": str(args.step_seconds),
                "PYTHONPATH": str(ROOT),
            }
            port = free_port()
            flow_log, serve_log = instance / "flow.log", instance / "serve.log"
            processes.append(start([str(BIN / "nico-api"), "flow"], env, flow_log))
            wait_for(lambda: '"flow started"' in flow_log.read_text(), processes[0], flow_log)
            serve = [str(BIN / "nico-api"), "serve", "--port", str(port), "--workers", "2"]
            processes.append(start([*serve, "--log-level", "warning"], env, serve_log))
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"), processes[1], serve_log)
            load_before = load_average()
            began = time.monotonic()
            load = asyncio.run(drive(port, token, racks, args.seconds, args.seed))
            elapsed = time.monotonic() - began
            load_after = load_average()
            ids = {task for order in load.tally.created for task in order.task_ids}
            rows, waited = settle(storage, ids)
            for process in processes:
                alive = process.poll() is None
                assert alive, f"{process.args[1]} stopped during the run"
            storage.dispose()
        finally:
            for process in reversed(processes):
                stop(process)
            drop()
        return report(args, load.tally, ids, rows, elapsed, waited, (load_before, load_after))


def report(
    args: argparse.Namespace,
    tally: Tally,
    ids: set[str],
    rows: dict[str, Any],
    elapsed: float,
    waited: float,
    loads: tuple[str, str],
) -> tuple[str, bool]:
    lost = sorted(ids - rows.keys())
    active = sorted(task for task, row in rows.items() if row.status in ACTIVE_STATUSES)
    doubled = duplicates(
        tally.created, {o.workflow: 2 for o in tally.created if "batch" in o.workflow}
    )
    bursts, split = split_bursts(tally.created)
    statuses = Counter(row.status for row in rows.values())
    creates, reads = len(tally.create_ms), len(tally.read_ms)
    total = creates + reads + len(tally.other_ms)
    checks = {
        "5xx other than queue-full": len(tally.server_errors),
        "transport errors": len(tally.transport_errors),
        "lost tasks": len(lost),
        "duplicated tasks": len(doubled),
        "tasks not terminal": len(active),
    }
    passed = not any(checks.values())
    lines = [
        f"Mixed load, {args.backend}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"`nico-api serve --workers 2` and `nico-api flow` (a step every {args.step_seconds:g} s), "
        f"{CLIENTS} clients for {elapsed:.0f} s at a Site of {args.racks} racks of four trays; "
        f"load average {loads[0]} before, {loads[1]} after",
        "",
        f"- requests: {total:,} ({total / elapsed:,.0f}/s); creates {creates:,} "
        f"({creates / elapsed:,.1f}/s, p50 {percentile(tally.create_ms, 0.5):.1f} ms, "
        f"p99 {percentile(tally.create_ms, 0.99):.1f} ms); reads {reads:,} "
        f"({reads / elapsed:,.1f}/s, p50 {percentile(tally.read_ms, 0.5):.1f} ms, "
        f"p99 {percentile(tally.read_ms, 0.99):.1f} ms); cancels {len(tally.other_ms):,}",
        f"- statuses: {json.dumps(dict(sorted(tally.statuses.items())))}",
        f"- bursts of {BURST} identical orders all sent before the first answer: {bursts:,}, "
        f"answered with more than one set of tasks: {split:,}",
        f"- queue-full answers (500 `{QUEUE_FULL}`): {tally.queue_full:,}",
        f"- tasks made: {len(ids):,}, settled {waited:.1f} s after the load; "
        f"{json.dumps(dict(sorted(statuses.items())))}",
        *(f"- {name}: {count}" for name, count in checks.items()),
        f"- {'PASS' if passed else 'FAIL'}",
    ]
    for name, items in (
        ("5xx", tally.server_errors),
        ("transport error", tally.transport_errors),
        ("lost", lost),
        ("duplicated", doubled),
        ("not terminal", active),
    ):
        lines += [f"  - {name}: {item}" for item in items[:5]]
    return "\n".join(lines) + "\n", passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--racks", type=int, default=64)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=27)
    args = parser.parse_args()
    text, passed = run(args)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
    publish(text, stamp, f"load-{args.backend}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
