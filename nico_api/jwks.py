"""Trusted issuers' key sets: fetched with a timeout, cached, refreshed when a token names a key
the cache does not have, and kept serving from the last good copy while the provider is down."""

from __future__ import annotations

import asyncio
import json
import logging
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


class KeySetUnavailableError(Exception):
    """No key set of the issuer could be fetched yet."""


@dataclass(frozen=True)
class SigningKey:
    key: Any
    algorithm: str | None  # as the key set declares it, if it does


class KeySet:
    # An unknown key id refreshes at most once a minute; before any success, retry sooner.
    refresh_interval = 60.0
    retry_interval = 5.0

    def __init__(
        self,
        source: str,
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.timeout = timeout
        self._clock = clock
        self._keys: dict[str | None, SigningKey] | None = None
        self._last_attempt: float | None = None
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def key(self, kid: str | None) -> SigningKey | None:
        """The signing key a token names, or None when the key set has no such key."""
        if self._keys is None or kid not in self._keys:
            await self._refresh_if_due()
        if self._keys is None:
            raise KeySetUnavailableError(self.source)
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh_if_due(self) -> None:
        # One fetch at a time; an asyncio lock belongs to one event loop.
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            now = self._clock()
            interval = self.retry_interval if self._keys is None else self.refresh_interval
            if self._last_attempt is not None and now - self._last_attempt < interval:
                return
            self._last_attempt = now
            try:
                self._keys = _signing_keys(await self._fetch())
            except Exception as exc:
                state = "keeping the cached key set" if self._keys else "no key set yet"
                log.warning("key set %s could not be fetched (%s): %r", self.source, state, exc)

    async def _fetch(self) -> Any:
        if self.source.startswith(("https://", "http://")):
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                response = await client.get(self.source, headers={"Accept": "application/json"})
                response.raise_for_status()
                if len(response.content) > MAX_DOCUMENT_BYTES:
                    raise ValueError("key set document is too large")
                return response.json()
        return json.loads(Path(self.source).read_bytes()[:MAX_DOCUMENT_BYTES])


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
