"""`make bench`, creates: power-control-rack on Racks no request named before, under wrk, with a
GET of the tasks just made beside it on the same server and data.

For each backend and worker count, a Site of racks (four trays each) is made, `nico-api serve`
started, and wrk (bench/wrk/create.lua, one thread) sends PATCH .../rack/{id}/power, each
request naming the next unused rack: every request makes one task and queues nothing. The
simulated Flow does not run: the figures are the API's. Each measurement runs twice on racks of
its own and the better run is kept (the machine is shared); then bench/wrk/tasks.lua GETs the
tasks made. The table goes to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bench import dataset
from bench.flow import BENCH_SITE, prepare
from bench.run import database_url, publish, start, stop, wrk
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage import models
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_SECONDS = 2


def measure(
    backend: str, workers: int, seconds: int, connections: int, per_run: int
) -> dict[str, object]:
    url = database_url(backend, "create")
    # Racks for the warm-up and two runs, each one's own.
    racks = per_run * 3
    with tempfile.TemporaryDirectory() as directory:
        instance = Path(directory)
        storage = prepare(url, racks, instance)
        try:
            with storage.engine.connect() as c:
                names = list(
                    c.scalars(
                        select(models.Rack.external_id)
                        .where(models.Rack.site_id == BENCH_SITE)
                        .order_by(models.Rack.external_id)
                    )
                )
        finally:
            storage.dispose()
        issuer = DevIssuer(Settings(instance_dir=instance, database_url=url))
        token = issuer.issue(dataset.ORG, ["PROVIDER_ADMIN"], 86400)
        other = issuer.issue(dataset.OTHER_ORG, ["PROVIDER_ADMIN"], 86400)
        files = []
        for n in range(3):
            path = instance / f"racks-{n}.txt"
            path.write_text("\n".join(names[n * per_run : (n + 1) * per_run]) + "\n")
            files.append(path)
        env = {
            **os.environ,
            "NICO_INSTANCE_DIR": str(instance),
            "NICO_DATABASE_URL": url,
            "PYTHONPATH": str(ROOT),
        }
        load_average = os.getloadavg()[0]
        port = free_port()
        process = start("nico", env, workers, port)
        try:
            args = [token, other, str(BENCH_SITE)]
            wrk("create.lua", port, [str(files[0]), *args], WARM_UP_SECONDS, connections)
            creates = [
                wrk("create.lua", port, [str(path), *args], seconds, connections)
                for path in files[1:]
            ]
            ids = instance / "tasks.txt"
            prepare_ids(url, instance, ids)
            gets = [wrk("tasks.lua", port, [str(ids), *args], seconds, connections) for _ in "12"]
        finally:
            stop(process)
    for run in creates:
        # A rack named twice queues a task behind the first: not the case measured.
        assert run["requests"] <= per_run, f"{run['requests']} requests, {per_run} racks a run"
    create, get = (
        max(runs, key=lambda r: r["requests"] / r["duration_s"]) for runs in (creates, gets)
    )
    return {
        "backend": backend,
        "workers": workers,
        "create": create,
        "create_rps": [round(r["requests"] / r["duration_s"]) for r in creates],
        "get": get,
        "get_rps": [round(r["requests"] / r["duration_s"]) for r in gets],
        "load_average": round(load_average, 2),
    }


def rate(run: dict) -> float:
    return run["requests"] / run["duration_s"]


def prepare_ids(url: str, instance: Path, path: Path) -> None:
    """The ids of the tasks the creates made, for the GET beside them."""
    from nico_api.storage.db import Storage

    storage = Storage(Settings(instance_dir=instance, database_url=url))
    try:
        with storage.engine.connect() as c:
            ids = c.scalars(select(models.Task.id).where(models.Task.site_id == BENCH_SITE))
            path.write_text("\n".join(str(i) for i in ids) + "\n")
    finally:
        storage.dispose()


def table(results: list[dict[str, object]], seconds: int, connections: int) -> str:
    lines = [
        f"# Creates: power-control-rack on unused racks ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"wrk: 1 thread, {connections} connections, {seconds} s per run after a "
        f"{WARM_UP_SECONDS} s warm-up; two runs on racks of their own, the better kept (both "
        "listed). GET: bench/wrk/tasks.lua on the tasks the creates made, same server.",
        "",
        "| backend | workers | create req/s | create p50 / p90 / p99 ms | create runs req/s "
        "| create statuses | GET req/s | GET p50 / p90 / p99 ms | GET runs req/s | load average |",
        "|---|---:|---:|---|---|---|---:|---|---|---:|",
    ]
    for r in results:
        create, get = r["create"], r["get"]
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(create["statuses"].items()))
        lines.append(
            f"| {r['backend']} | {r['workers']} "
            f"| {create['requests'] / create['duration_s']:,.0f} "
            f"| {create['p50_ms']:.1f} / {create['p90_ms']:.1f} / {create['p99_ms']:.1f} "
            f"| {' , '.join(str(x) for x in r['create_rps'])} | {statuses} "
            f"| {get['requests'] / get['duration_s']:,.0f} "
            f"| {get['p50_ms']:.2f} / {get['p90_ms']:.2f} / {get['p99_ms']:.2f} "
            f"| {' , '.join(str(x) for x in r['get_rps'])} | {r['load_average']} |"
        )
    lines += [
        "",
        "The load average is the machine's (1 minute) as the server started. The simulated Flow",
        "does not run: each create's task stays pending.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--racks-per-run", type=int, default=4000)
    args = parser.parse_args()
    results = [
        measure(backend, int(workers), args.seconds, args.connections, args.racks_per_run)
        for backend in args.backends.split(",")
        for workers in args.workers.split(",")
    ]
    publish(
        table(results, args.seconds, args.connections),
        datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ"),
        "create",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
