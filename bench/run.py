"""`make bench`: the service and the limit app (bench/baseline.py: Python doing the same work with
nothing else), side by side, under wrk.

For each backend (SQLite, PostgreSQL), task count and worker count, both apps are started with
uvicorn on loopback and driven with the same wrk script; the table goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import httpx
import psycopg

from bench import dataset
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.storage.db import Storage
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class Result:
    app: str
    backend: str
    tasks: int
    workers: int
    rps: float
    p50: float
    p90: float
    p99: float
    statuses: dict[str, int]
    errors: int
    rss_mb: list[float] = field(default_factory=list)
    rss_growth_mb: float | None = None


def database_url(backend: str, label: int | str) -> str:
    """A benchmark database, kept between runs: bench/data/nico-LABEL.db or nico_bench_LABEL."""
    if backend == "sqlite":
        (BENCH / "data").mkdir(exist_ok=True)
        return f"sqlite:///{BENCH / 'data' / f'nico-{label}.db'}"
    name = f"nico_bench_{label}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def start(app: str, env: dict[str, str], workers: int, port: int) -> subprocess.Popen:
    if app == "nico":
        # As deployed: one JSON access-log line per request (written to /dev/null here).
        command = [
            str(BIN / "nico-api"),
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "info",
        ]
    else:
        command = [
            str(BIN / "uvicorn"),
            "bench.baseline:create_app",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return answering(process, port, app)


def answering(process: subprocess.Popen, port: int, what: str) -> subprocess.Popen:
    """`process` once it answers /healthz on `port` (within a minute, or RuntimeError)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def worker_rss_mb(process: subprocess.Popen) -> list[float]:
    """Resident memory of each serving process (the workers, or the single process)."""
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
    pids = [int(p) for p in children.stdout.split()]
    rss = []
    for pid in pids or [process.pid]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"resource_tracker" in command:
            continue  # uvicorn's supervisor helper, not a worker
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        rss.append(kb / 1024)
    return sorted(rss, reverse=True)


def wrk(script: str, port: int, args: list[str], seconds: int, connections: int) -> dict:
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "wrk" / script),
            f"http://127.0.0.1:{port}",
            "--",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def measure(
    app: str,
    backend: str,
    tasks: int,
    workers: int,
    env: dict[str, str],
    wrk_args: list[str],
    seconds: int,
    connections: int,
    script: str = "tasks.lua",
) -> Result:
    port = free_port()
    process = start(app, env, workers, port)
    try:
        wrk(script, port, wrk_args, 2, connections)  # warm-up
        runs = []
        rss = []
        for _ in range(2):  # two consecutive runs: the second is reported, RSS compared
            runs.append(wrk(script, port, wrk_args, seconds, connections))
            rss.append(worker_rss_mb(process))
    finally:
        stop(process)
    last = runs[-1]
    errors = sum(last[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return Result(
        app=app if script == "tasks.lua" else f"{app} {script.removesuffix('.lua')}",
        backend=backend,
        tasks=tasks,
        workers=workers,
        rps=last["requests"] / last["duration_s"],
        p50=last["p50_ms"],
        p90=last["p90_ms"],
        p99=last["p99_ms"],
        statuses=last["statuses"],
        errors=errors,
        rss_mb=rss[-1],
        rss_growth_mb=max(b - a for a, b in zip(rss[0], rss[1], strict=False)),
    )


def hostile(env: dict[str, str], wrk_args: list[str], seconds: int, connections: int) -> dict:
    port = free_port()
    process = start("nico", env, 1, port)
    try:
        return wrk("hostile.lua", port, wrk_args, seconds, connections)
    finally:
        stop(process)


def versions() -> str:
    packages = ["connexion", "starlette", "uvicorn", "SQLAlchemy", "pydantic", "PyJWT", "psycopg"]
    listed = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    with psycopg.connect(POSTGRES_ADMIN) as admin:
        postgres = admin.execute("SHOW server_version").fetchone()[0]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()}; {listed}; SQLite {_sqlite()}; "
        f"PostgreSQL {postgres}; {wrk_version.strip()}"
    )


def _sqlite() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def table(results: list[Result]) -> str:
    rows = [
        "| backend | tasks | workers | app | req/s | ratio | p50 ms | p90 ms | p99 ms "
        "| RSS MB/worker | RSS growth MB | statuses | errors |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    limit = {(r.backend, r.tasks, r.workers): r.rps for r in results if r.app == "limit"}
    for r in results:
        base = limit.get((r.backend, r.tasks, r.workers))
        ratio = f"{r.rps / base:.2f}" if r.app == "nico" and base else ""
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()))
        rss = "/".join(f"{m:.0f}" for m in r.rss_mb)
        rows.append(
            f"| {r.backend} | {r.tasks:,} | {r.workers} | {r.app} | {r.rps:,.0f} | {ratio} "
            f"| {r.p50:.2f} | {r.p90:.2f} | {r.p99:.2f} | {rss} | "
            f"{r.rss_growth_mb:+.1f} | {statuses} | {r.errors} |"
        )
    return "\n".join(rows)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--hostile-seconds", type=int, default=60)
    return parser.parse_args()


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Case:
    """One backend and task count, its data ready: what the servers and wrk are given."""

    backend: str
    tasks: int
    env: dict[str, str]
    wrk_args: list[str]


def prepare_case(backend: str, tasks: int, instance: Path) -> Case:
    """The data set in its database, a sample of its task ids, and tokens for wrk."""
    url = database_url(backend, tasks)
    settings = Settings(instance_dir=instance, database_url=url)
    storage = Storage(settings)
    started = time.monotonic()
    try:
        dataset.prepare(storage, tasks)
        ids_file = instance / f"ids-{backend}-{tasks}.txt"
        ids_file.write_text("\n".join(dataset.sample_ids(storage.engine)) + "\n")
    finally:
        storage.dispose()
    _progress(f"{backend} {tasks:,} tasks ready in {time.monotonic() - started:.0f}s")
    issuer = DevIssuer(settings)
    wrk_args = [
        str(ids_file),
        issuer.issue(dataset.ORG, ["PROVIDER_ADMIN"], 86400),
        issuer.issue(dataset.OTHER_ORG, ["PROVIDER_ADMIN"], 86400),
        str(dataset.SITE),
    ]
    env = {
        **os.environ,
        "NICO_INSTANCE_DIR": str(instance),
        "NICO_DATABASE_URL": url,
        "PYTHONPATH": str(ROOT),
    }
    return Case(backend, tasks, env, wrk_args)


def measure_case(case: Case, args: argparse.Namespace) -> list[Result]:
    """The limit and the service with each worker count, then a page of the task list."""
    results = []
    for workers in (int(n) for n in args.workers.split(",")):
        for app in ("limit", "nico"):
            result = measure(
                app,
                case.backend,
                case.tasks,
                workers,
                case.env,
                case.wrk_args,
                args.seconds,
                args.connections,
            )
            _progress(f"  {app} x{workers}: {result.rps:,.0f} req/s, p99 {result.p99:.2f} ms")
            results.append(result)
    # A page of the site's task list: its cost should not grow with the task count.
    lists = measure(
        "nico",
        case.backend,
        case.tasks,
        1,
        case.env,
        case.wrk_args,
        args.seconds,
        args.connections,
        script="lists.lua",
    )
    _progress(f"  nico lists x1: {lists.rps:,.0f} req/s, p50 {lists.p50:.2f} ms")
    return [*results, lists]


def report(
    results: list[Result], hostile_result: dict | None, args: argparse.Namespace, stamp: str
) -> str:
    lines = [
        f"# Benchmark {stamp}",
        "",
        versions(),
        "",
        f"wrk: 1 thread, {args.connections} connections, {args.seconds}s per run after a "
        "2 s warm-up; the second of two consecutive runs is reported. Requests: random "
        "existing tasks, 5% unknown tasks (404), 5% another org's caller (403). ratio = "
        "service / limit throughput for the same backend, tasks and workers. The service "
        "writes its JSON access log (level info) and counts its metrics; the limit does neither.",
        "",
        table(results),
        "",
    ]
    if hostile_result is not None:
        fives = sum(n for status, n in hostile_result["statuses"].items() if status.startswith("5"))
        errors = sum(
            hostile_result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        )
        lines += [
            f"Mixed hostile load, {args.hostile_seconds}s, 1 worker: "
            f"{hostile_result['requests']:,} requests, 5xx: {fives}, connection errors: "
            f"{errors}, statuses: {json.dumps(hostile_result['statuses'], sort_keys=True)}",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    args = _arguments()
    if shutil.which("wrk") is None:
        print("wrk is required (Debian package wrk)", file=sys.stderr)
        return 2
    instance = Path(tempfile.mkdtemp(prefix="nico-bench-"))
    results: list[Result] = []
    hostile_result = None
    for backend in args.backends.split(","):
        for tasks in (int(n) for n in args.sizes.split(",")):
            case = prepare_case(backend, tasks, instance)
            results += measure_case(case, args)
            if hostile_result is None and args.hostile_seconds > 0:
                hostile_result = hostile(
                    case.env, case.wrk_args, args.hostile_seconds, args.connections
                )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
    publish(report(results, hostile_result, args, stamp), stamp)
    return 0


def publish(report: str, stamp: str, case: str = "") -> None:
    """Write a report to bench/results/ under its time stamp and as its case's latest."""
    (BENCH / "results" / f"{stamp}{'-' + case if case else ''}.md").write_text(report)
    (BENCH / "results" / f"{case + '-' if case else ''}latest.md").write_text(report)
    print(report)


if __name__ == "__main__":
    sys.exit(main())
