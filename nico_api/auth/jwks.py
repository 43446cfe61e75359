"""Trusted issuers' key sets: fetched within a deadline and a size limit, one fetch at a time
that every waiting request shares, used for the lifetime the provider's Cache-Control gives
(within the issuer's bounds), refreshed early when a token names a key the set does not have,
and kept serving from the last good copy while the provider is down."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jwt import PyJWK

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 1 << 20
# Used when the provider sends no max-age (within the issuer's bounds).
DEFAULT_LIFETIME = 300.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


class KeySetUnavailableError(Exception):
    """No key set of the issuer could be fetched yet."""


@dataclass(frozen=True)
class SigningKey:
    key: Any
    algorithm: str | None  # as the key set declares it, if it does


class KeySet:
    # An unknown key id refreshes at most once a minute; after a failed fetch, retry sooner.
    refresh_interval = 60.0
    retry_interval = 5.0

    def __init__(
        self,
        source: str,
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        lifetime: tuple[float, float] = (60.0, 3600.0),
        on_fetch: Callable[[bool], None] | None = None,
    ) -> None:
        self.source = source
        # Told of each fetch's outcome (True: fetched), for the metrics.
        self._on_fetch = on_fetch
        self.timeout = timeout
        self.lifetime = lifetime
        self._clock = clock
        self._keys: dict[str | None, SigningKey] | None = None
        self._expires = 0.0
        self._last_attempt: float | None = None
        self._last_failed = False
        # The fetch in flight, per event loop (a task belongs to one loop).
        self._fetches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    async def key(self, kid: str | None) -> SigningKey | None:
        """The signing key a token names, or None when the key set has no such key."""
        if self._refresh_due(kid):
            fetch = self._shared_fetch()
            # A set past its lifetime that holds the key serves it while it is fetched again:
            # a hanging provider costs no request a wait. Otherwise the request waits for the
            # fetch (shared, within its deadline).
            if self._cached(kid) is None:
                await asyncio.shield(fetch)
        if self._keys is None:
            raise KeySetUnavailableError(self.source)
        return self._cached(kid)

    def _cached(self, kid: str | None) -> SigningKey | None:
        if self._keys is None:
            return None
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _refresh_due(self, kid: str | None) -> bool:
        now = self._clock()
        since = None if self._last_attempt is None else now - self._last_attempt
        if since is None:
            return True
        if self._last_failed and since < self.retry_interval:
            return False
        if self._keys is None or now >= self._expires:
            return True
        return kid not in self._keys and since >= self.refresh_interval

    def _shared_fetch(self) -> asyncio.Task[None]:
        # Every request that finds the set due shares one fetch.
        loop = asyncio.get_running_loop()
        fetch = self._fetches.get(loop)
        if fetch is None or fetch.done():
            fetch = self._fetches[loop] = loop.create_task(self._refresh())
        return fetch

    async def _refresh(self) -> None:
        self._last_attempt = self._clock()
        try:
            async with asyncio.timeout(self.timeout):
                document, max_age = await self._fetch()
            self._keys = _signing_keys(document)
        except Exception as exc:
            self._last_failed = True
            state = "keeping the cached key set" if self._keys else "no key set yet"
            log.warning("key set %s could not be fetched (%s): %r", self.source, state, exc)
            if self._on_fetch is not None:
                self._on_fetch(False)
            return
        self._last_failed = False
        if self._on_fetch is not None:
            self._on_fetch(True)
        shortest, longest = self.lifetime
        wanted = DEFAULT_LIFETIME if max_age is None else max_age
        self._expires = self._last_attempt + min(max(wanted, shortest), longest)

    async def _fetch(self) -> tuple[Any, float | None]:
        """The key set document, and the provider's max-age for it, if it gives one."""
        if not self.source.startswith(("https://", "http://")):
            return json.loads(Path(self.source).read_bytes()[:MAX_DOCUMENT_BYTES]), None
        async with (
            httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client,
            client.stream("GET", self.source, headers={"Accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            if int(response.headers.get("content-length") or 0) > MAX_DOCUMENT_BYTES:
                raise ValueError("key set document is too large")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                # Checked while reading: a huge document is never held whole.
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError("key set document is too large")
            return json.loads(body), _max_age(response.headers.get("cache-control", ""))


def _max_age(cache_control: str) -> float | None:
    if "no-store" in cache_control.lower() or "no-cache" in cache_control.lower():
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def _signing_keys(document: Any) -> dict[str | None, SigningKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a key set is a JSON object with a 'keys' list")
    keys: dict[str | None, SigningKey] = {}
    for jwk in document["keys"]:
        # Symmetric keys are never taken from a key set: HS* needs the issuer's own secret.
        if not isinstance(jwk, dict) or jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            continue
        try:
            parsed = PyJWK(jwk)
        except Exception as exc:
            log.warning("skipping an unusable key %r: %s", jwk.get("kid"), exc)
            continue
        alg = jwk.get("alg")
        keys[parsed.key_id] = SigningKey(parsed.key, alg if isinstance(alg, str) else None)
    if not keys:
        raise ValueError("the key set has no usable signing keys")
    return keys
