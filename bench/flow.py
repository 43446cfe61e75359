"""`make bench`, the simulated NICo Flow: N tasks running at once on one `nico-api flow` process.

For each backend, a Site of N racks (four trays each) gets one power-on task per rack in one
request's worth of work; the Flow process then runs them all, a step every
NICO_FLOW_STEP_SECONDS. Reported: how late each step was written after it was due (p50, p99,
max, from the process's own count), the process's CPU share while the tasks ran and its CPU
per step written, its memory (peak RSS), and the database's load: on PostgreSQL the CPU of the
Flow's session (the server process holding its lock) and the transactions and rows updated per
second (pg_stat_database); SQLite's work is inside the Flow process. The table goes to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, make_url, select, text

from bench.run import BIN, database_url, publish
from nico_api.config import Settings
from nico_api.flow import manager, operations
from nico_api.flow.executor import ADVISORY_LOCK
from nico_api.storage import fixture, models
from nico_api.storage.db import Storage

BENCH_SITE = uuid.UUID("7d3c1f8e-0b6a-4c55-9e21-4f0a9b8c7d6e")
PROVIDER = uuid.UUID("1a398328-d134-4f59-8ed9-2dc1fca5114c")  # acme-inc in the demo data
LAYOUT = (("PowerShelf", 0), ("NVSwitch", 10), ("Compute", 20), ("Compute", 21))
TICKS = os.sysconf("SC_CLK_TCK")


def prepare(url: str, racks: int, instance: Path) -> Storage:
    """A fresh schema with the demo data and a Site of `racks` racks of four trays."""
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(make_url(url).database + suffix).unlink(missing_ok=True)
    storage = Storage(Settings(instance_dir=instance, database_url=url))
    if url.startswith("postgresql"):
        with storage.engine.begin() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    storage.upgrade()
    fixture.load(storage, fixture.demo())
    rack_rows = [
        {"id": uuid.uuid4(), "site_id": BENCH_SITE, "external_id": f"bench-{n}", "name": f"B-{n}"}
        for n in range(racks)
    ]
    now = models.utcnow()
    with storage.engine.begin() as c:
        c.execute(
            insert(models.Site).values(
                id=BENCH_SITE,
                name="bench-dc",
                infrastructure_provider_id=PROVIDER,
                flow_enabled=True,
            )
        )
        c.execute(insert(models.Rack), [{**r, "created": now, "updated": now} for r in rack_rows])
        c.execute(
            insert(models.Tray),
            [
                {
                    "id": uuid.uuid4(),
                    "rack_id": rack["id"],
                    "external_id": f"{rack['external_id']}-{slot}",
                    "type": kind,
                    "slot": slot,
                    "created": now,
                    "updated": now,
                }
                for rack in rack_rows
                for kind, slot in LAYOUT
            ],
        )
    return storage


def submit(storage: Storage, racks: int) -> None:
    """A power on of every rack of the Site: one task per rack, all due at once."""
    submission = operations.Submission(BENCH_SITE, "power_on", "API power on Rack", {})
    with storage.engine.begin() as c:
        made = manager.submit(c, submission, models.utcnow(), 3600)
    assert len(made) == racks, len(made)


def active(storage: Storage) -> int:
    with storage.connection() as c:
        return c.scalar(
            select(func.count()).where(
                models.Task.site_id == BENCH_SITE, models.Task.status.in_(("pending", "running"))
            )
        )


def sample(pid: int) -> tuple[float, float]:
    """The process's CPU seconds so far and its resident memory in MB."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


def database_load(storage: Storage) -> tuple[float, float, float]:
    """PostgreSQL's transactions committed and rows updated in the benchmark's database so far,
    and the CPU seconds of the session holding the Flow lock."""
    with storage.engine.connect() as c:
        commits, updated = c.execute(
            text(
                "SELECT xact_commit, tup_updated FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        ).one()
        holder = c.scalar(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": ADVISORY_LOCK},
        )
    return float(commits), float(updated), sample(holder)[0] if holder else 0.0


def measure(backend: str, racks: int, step_seconds: float) -> dict[str, object]:
    url = database_url(backend, "flow")
    with tempfile.TemporaryDirectory() as instance:
        storage = prepare(url, racks, Path(instance))
        env = {
            **os.environ,
            "NICO_INSTANCE_DIR": instance,
            "NICO_DATABASE_URL": url,
            "NICO_FLOW_STEP_SECONDS": str(step_seconds),
        }
        log = Path(instance) / "flow.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(BIN / "nico-api"), "flow"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        # The tasks are made once the process runs: its start-up is not a step's lag.
        while '"flow started"' not in log.read_text():
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
        postgres = backend == "postgresql"
        load_average = os.getloadavg()[0]
        submit(storage, racks)
        started = time.monotonic()
        cpu_start, peak = sample(process.pid)
        load_start = database_load(storage) if postgres else None
        while active(storage):
            time.sleep(0.5)
            _, rss = sample(process.pid)
            peak = max(peak, rss)
            assert process.poll() is None, log.read_text()
        elapsed = time.monotonic() - started
        cpu, _ = sample(process.pid)
        load = database_load(storage) if postgres else None
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        if load is not None:
            # A session sends its counts to the statistics system now and then, and as it ends.
            time.sleep(1)
            load = (*database_load(storage)[:2], load[2])
        storage.dispose()
        stopped = next(
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and json.loads(line)["message"] == "flow stopped"
        )
    return {
        "backend": backend,
        "tasks": racks,
        "steps": stopped["steps"],
        "seconds": round(elapsed, 1),
        **{
            f"{kind}_{stat}": round(stopped[f"{kind}_{stat}_ms"], 1)
            for kind in ("step", "start")
            for stat in ("p50", "p99", "max")
        },
        "cpu_share": round((cpu - cpu_start) / elapsed, 2),
        "cpu_per_step_ms": round(1000 * (cpu - cpu_start) / max(stopped["steps"], 1), 2),
        "peak_rss_mb": round(peak, 1),
        "load_average": round(load_average, 2),
        **(
            {
                "db_cpu_share": round((load[2] - load_start[2]) / elapsed, 2),
                "db_commits_per_s": round((load[0] - load_start[0]) / elapsed),
                "db_updates_per_s": round((load[1] - load_start[1]) / elapsed),
            }
            if load is not None and load_start is not None
            else {"db_cpu_share": "in process", "db_commits_per_s": "-", "db_updates_per_s": "-"}
        ),
    }


def table(results: list[dict[str, object]], step_seconds: float) -> str:
    lines = [
        f"Simulated NICo Flow: one process, every task running at once, a step every "
        f"{step_seconds:g} s ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        "| backend | tasks | steps | run (s) | step lag p50 / p99 / max (ms) "
        "| start lag p50 / p99 / max (ms) | CPU share | CPU per step (ms) | peak RSS (MB) "
        "| database CPU share | commits/s | rows updated/s | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | {r['tasks']} | {r['steps']} | {r['seconds']} "
            f"| {r['step_p50']} / {r['step_p99']} / {r['step_max']} "
            f"| {r['start_p50']} / {r['start_p99']} / {r['start_max']} "
            f"| {r['cpu_share']} | {r['cpu_per_step_ms']} | {r['peak_rss_mb']} "
            f"| {r['db_cpu_share']} | {r['db_commits_per_s']} | {r['db_updates_per_s']} "
            f"| {r['load_average']} |"
        )
    lines += [
        "",
        "A step's lag is the time from when it was due to when it was written. The starts were",
        "due when the one request that made every task scheduled them, before it committed.",
        "The database CPU share is the PostgreSQL server process of the Flow's session; SQLite",
        "runs inside the Flow process, in its CPU share. The load average is the machine's",
        "(1 minute) as the tasks were made.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--tasks", default="1000,10000", help="task counts, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=2.0)
    args = parser.parse_args()
    results = [
        measure(backend, int(tasks), args.step_seconds)
        for tasks in args.tasks.split(",")
        for backend in args.backends.split(",")
    ]
    publish(table(results, args.step_seconds), datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ"), "flow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
