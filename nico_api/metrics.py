"""Prometheus metrics: requests and latencies by operation, the database pool, key-set fetches,
and the simulated Flow's tasks. Each app (and each Flow) holds its own; under `serve`, whose
worker processes share one port, prometheus-client's multiprocess files join them up."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from nico_api.config import MULTIPROCESS_DIR

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a cached read (about a millisecond) to the database's request deadline (10 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# Whether this process writes its figures to the shared folder: prometheus-client settles it
# once, when first imported, after `nico-api serve` has set the folder.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_DIR))


def workers_registry() -> CollectorRegistry:
    """A registry that reads every worker's figures from the multiprocess folder, leaving out
    the live figures (connections in use and possible) of workers that died."""
    registry = CollectorRegistry()
    LiveWorkers(registry, os.environ[MULTIPROCESS_DIR])
    return registry


class LiveWorkers(multiprocess.MultiProcessCollector):
    """prometheus-client's collector of the workers' files, dead workers' live gauges dropped
    first (uvicorn starts a new worker in place of one that died)."""

    def __init__(self, registry: CollectorRegistry, folder: str) -> None:
        super().__init__(registry, path=folder)
        self.folder = Path(folder)

    def collect(self) -> Iterable[Any]:
        for path in self.folder.glob("gauge_live*_*.db"):
            pid = int(path.stem.rpartition("_")[2])
            if not _alive(pid):
                multiprocess.mark_process_dead(pid)
        return super().collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # signalled, or not ours to signal: alive either way


class ServiceMetrics:
    """What the API server reports: its requests, its database pool, its key-set fetches."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "nico_http_requests",
            "HTTP requests answered, by operationId (none: no route) and status.",
            ["operation", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nico_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by operationId.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_in_use = Gauge(
            "nico_db_connections_in_use",
            "Database connections requests hold now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_capacity = Gauge(
            "nico_db_connections_max",
            "Database connections requests may hold at once (pool size plus overflow).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.db_waits = Counter(
            "nico_db_pool_waits",
            "Requests that found every database connection in use and waited for one.",
            registry=registry,
        )
        self.db_timeouts = Counter(
            "nico_db_pool_timeouts",
            "Requests answered 503 because no database connection became free in time.",
            registry=registry,
        )
        self.key_set_fetches = Counter(
            "nico_key_set_fetches",
            "Fetches of an issuer's key set (JWKS), by issuer and outcome (ok, failed).",
            ["issuer", "outcome"],
            registry=registry,
        )

    def request(self, operation: str | None, status: int, seconds: float) -> None:
        operation = operation or "none"
        self.requests.labels(operation, str(status)).inc()
        self.latency.labels(operation).observe(seconds)

    def key_set_fetched(self, issuer: str, ok: bool) -> None:
        self.key_set_fetches.labels(issuer, "ok" if ok else "failed").inc()

    def exposition(self) -> bytes:
        """The text a scrape reads: every worker's figures in multiprocess mode."""
        return generate_latest(workers_registry() if MULTIPROCESS else self.registry)

    def close(self) -> None:
        """A worker that stops takes its live figures (connections in use) with it."""
        if MULTIPROCESS:
            multiprocess.mark_process_dead(os.getpid())


class FlowMetrics:
    """What the simulated NICo Flow reports: the tasks it holds by status, and how late steps
    run after they fall due."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.tasks = Gauge(
            "nico_flow_tasks",
            "Tasks NICo Flow has yet to finish, by status.",
            ["status"],
            registry=registry,
        )
        self.steps = Counter("nico_flow_steps", "Steps NICo Flow has run.", registry=registry)
        self.lag = Histogram(
            "nico_flow_step_lag_seconds",
            "How late a step ran after it fell due, by kind (start: a task's first step).",
            ["kind"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def holding(self, counts: Iterable[tuple[str, int]], statuses: Iterable[str]) -> None:
        by_status = dict(counts)
        for status in statuses:
            self.tasks.labels(status).set(by_status.get(status, 0))

    def stepped(self, kind: str, lag_seconds: float) -> None:
        self.steps.inc()
        self.lag.labels(kind).observe(lag_seconds)
