"""Real processes for tests: the nico-api command, and servers on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

# How often a wait looks again at what it waits for (a server's answer, a log line).
POLL_SECONDS = 0.05

BIN = Path(sys.executable).parent
NICO_API = str(BIN / "nico-api")


def run(
    env: Mapping[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NICO_API, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    command: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    port: int,
    start_timeout: float = 30,
    process_group: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    workers: int = 1,
) -> Iterator[str]:
    """Run a server until the block ends (with `process_group`, its children too, for a
    launcher such as npx; `preexec_fn` runs in the child before it starts, e.g. to lower a
    limit); yields its base URL once it answers, and once each of its `workers` (worker
    processes of `nico-api serve`, which logs JSON lines) has answered a request."""
    with log.open("w") as out:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=process_group,
            preexec_fn=preexec_fn,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    # A new connection each time, so that any worker may take it.
                    httpx.get(base_url + "/healthz", headers={"Connection": "close"}, timeout=1)
                    if workers == 1 or len(serving_pids(log)) >= workers:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the server did not start\n" + log.read_text()
                time.sleep(POLL_SECONDS)
            yield base_url
        finally:
            if process_group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.terminate()
            process.wait(timeout=15)


def log_lines(log: Path) -> list[dict]:
    """A JSON-logging process's log lines (a line cut short by a write in progress left out)."""
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def started_pids(log: Path) -> list[int]:
    """The worker processes of `nico-api serve` that have started, in order, from its log."""
    return [
        line["pid"]
        for line in log_lines(log)
        if "Application startup complete" in line.get("message", "")
    ]


def serving_pids(log: Path) -> set[int]:
    """The worker processes of `nico-api serve` that have answered a request, from its log."""
    return {line["pid"] for line in log_lines(log) if "operation" in line}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def headless_dom(url: str, profile: Path, budget_ms: int = 20000) -> str:
    """The page at `url` as headless Chromium leaves it once its scripts have run."""
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
