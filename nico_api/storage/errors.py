"""Storage's own failures, named without any notion of how a client is answered."""

from __future__ import annotations


class StorageDeadlineError(Exception):
    """The database did not finish a request's work within its deadline (it may be frozen or
    unreachable without a connection error)."""
