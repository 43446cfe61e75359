"""One application's runtime: its settings, its database, who it trusts, and its development
issuer. `create_app` builds one per app and keeps it on the app; nothing is held elsewhere, so
that two apps with different settings can live in one process."""

from __future__ import annotations

from dataclasses import dataclass

from nico_api.auth.authenticator import Authenticator, auth_config_for
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.config import Settings
from nico_api.metrics import ServiceMetrics
from nico_api.storage.db import Storage
from nico_api.store import Store


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    storage: Storage
    store: Store
    authenticator: Authenticator
    # Only when no issuers are configured: tokens from `nico-api token`.
    dev_issuer: DevIssuer | None
    # None when NICO_METRICS is off: nothing is counted.
    metrics: ServiceMetrics | None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        dev_issuer = DevIssuer(settings) if settings.auth_config is None else None
        metrics = ServiceMetrics() if settings.metrics else None
        storage = Storage(settings, metrics)
        return cls(
            settings=settings,
            storage=storage,
            store=Store(storage),
            authenticator=Authenticator(
                auth_config_for(settings, dev_issuer),
                on_key_set_fetch=metrics.key_set_fetched if metrics else None,
            ),
            dev_issuer=dev_issuer,
            metrics=metrics,
        )

    def close(self) -> None:
        self.storage.dispose()
        if self.metrics is not None:
            self.metrics.close()
