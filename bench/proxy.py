"""`python -m bench.proxy`: what `nico-api proxy` adds to a task GET. The same wrk script
(bench/wrk/tasks.lua: a random task of the site, 5% unknown, 5% from another org) drives
`nico-api serve` directly, then through the proxy, in alternating rounds, at 16 connections and
at 1 (the proxy's own cost, unloaded); the proxy's summary must count no violation.
The table goes to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.run import (
    BIN,
    ROOT,
    answering,
    prepare_case,
    publish,
    start,
    stop,
    versions,
    wrk,
)
from tests.processes import free_port

# The budget the proxy's cost is held to, at the median.
TARGET_P50_MS = 2.0


def start_proxy(env: dict[str, str], target: str, port: int, log: Path) -> subprocess.Popen:
    command = [
        str(BIN / "nico-api"),
        "proxy",
        "--target",
        target,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("w") as err:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        return answering(process, port, "the proxy")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: {log.read_text()}") from None


def stop_proxy(process: subprocess.Popen) -> str:
    process.terminate()
    out, _ = process.communicate(timeout=30)
    return out


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system): what it costs, however busy the
    machine is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime, fields 14 and 15 of proc(5), counted from the state (field 3).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", default="16,1")
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ")
    rows = []
    with tempfile.TemporaryDirectory(prefix="nico-bench-proxy-") as folder:
        instance = Path(folder)
        case = prepare_case(args.backend, args.tasks, instance)
        server_port, proxy_port = free_port(), free_port()
        server = start("nico", case.env, 1, server_port)
        try:
            target = f"http://127.0.0.1:{server_port}"
            proxy = start_proxy(case.env, target, proxy_port, instance / "proxy.log")
            try:
                for connections in (int(n) for n in args.connections.split(",")):
                    ports = (server_port, proxy_port)
                    pids = (server.pid, proxy.pid)
                    rows.append(_compare(case.wrk_args, ports, pids, connections, args))
            finally:
                summary = stop_proxy(proxy)
        finally:
            stop(server)
        log = (instance / "proxy.log").read_text()
    totals = next(line.split() for line in summary.splitlines() if line.split()[:1] == ["all"])
    exchanges, violations = int(totals[1]), int(totals[2])
    report = _report(rows, args, exchanges, violations, log)
    publish(report, stamp, "proxy")
    return 0 if violations == 0 else 1


def _compare(
    wrk_args: list[str],
    ports: tuple[int, int],
    pids: tuple[int, int],
    connections: int,
    args: argparse.Namespace,
) -> dict:
    """Alternating rounds, direct then proxied, after a warm-up of each."""
    server_port, proxy_port = ports
    server_pid, proxy_pid = pids
    for port in ports:
        wrk("tasks.lua", port, wrk_args, 2, connections)
    direct, proxied = [], []
    proxy_cpu = server_cpu = 0.0
    for _ in range(args.rounds):
        before = cpu_seconds(server_pid)
        direct.append(wrk("tasks.lua", server_port, wrk_args, args.seconds, connections))
        server_cpu += cpu_seconds(server_pid) - before
        before = cpu_seconds(proxy_pid)
        proxied.append(wrk("tasks.lua", proxy_port, wrk_args, args.seconds, connections))
        proxy_cpu += cpu_seconds(proxy_pid) - before
    row = {
        "connections": connections,
        "proxy_cpu_ms": 1000 * proxy_cpu / sum(run["requests"] for run in proxied),
        "server_cpu_ms": 1000 * server_cpu / sum(run["requests"] for run in direct),
    }
    for name, runs in (("direct", direct), ("proxied", proxied)):
        row[name] = {
            "rps": statistics.mean(run["requests"] / run["duration_s"] for run in runs),
            **{
                key: statistics.mean(run[key] for run in runs)
                for key in ("p50_ms", "p90_ms", "p99_ms")
            },
            "errors": sum(
                run[key]
                for run in runs
                for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
            ),
        }
    print(
        f"{connections} connections: p50 {row['direct']['p50_ms']:.2f} -> "
        f"{row['proxied']['p50_ms']:.2f} ms",
        file=sys.stderr,
        flush=True,
    )
    return row


def _report(
    rows: list[dict], args: argparse.Namespace, exchanges: int, violations: int, log: str
) -> str:
    lines = [
        f"`nico-api proxy` in front of `nico-api serve` (1 worker, {args.backend}, "
        f"{args.tasks:,} tasks): a task GET (bench/wrk/tasks.lua), wrk 1 thread, "
        f"{args.rounds} alternating rounds of {args.seconds}s each way after a 2s warm-up; "
        "figures are the rounds' means.",
        "",
        "| connections | path | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for name in ("direct", "proxied"):
            m = row[name]
            lines.append(
                f"| {row['connections']} | {name} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | "
                f"{m['p90_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']} |"
            )
    lines += ["", "What the proxy adds:", ""]
    for row in rows:
        added = {key: row["proxied"][key] - row["direct"][key] for key in ("p50_ms", "p99_ms")}
        verdict = "within" if added["p50_ms"] <= TARGET_P50_MS else "over"
        lines.append(
            f"- {row['connections']} connections: p50 {added['p50_ms']:+.2f} ms ({verdict} the "
            f"{TARGET_P50_MS:g} ms budget), p99 {added['p99_ms']:+.2f} ms; the proxy's CPU "
            f"time per exchange {row['proxy_cpu_ms']:.2f} ms (the server's per request, "
            f"direct: {row['server_cpu_ms']:.2f} ms)"
        )
    lines += [
        "",
        f"Load average when done: {_load()} on {os.cpu_count()} CPUs (wrk, the server and the "
        "proxy share them; latency beyond the CPU time is waiting for a CPU).",
        "",
        f"The proxy checked {exchanges:,} exchanges and counted {violations} violations"
        + ("." if not violations else f"; its log:\n\n```\n{log[-2000:]}\n```"),
        "",
        "Environment:",
        "",
        versions(),
        "",
    ]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
