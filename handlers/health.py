"""Liveness and readiness probes."""

from __future__ import annotations

from nico_api import db, schemas


def get_health() -> schemas.Health:
    return schemas.Health()


async def get_readiness() -> schemas.Health:
    # A database that does not answer raises a storage error: the 503 envelope.
    await db.run(db.ping)
    return schemas.Health()
