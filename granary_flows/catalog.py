"""Which deployments a runner serves, and the definition each run executes: the registry in Prefect (`granary
serve`, `granary worker`), or a fixed set of definitions (tests, benchmarks)."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient

from granary_flows.loading import Definition


class Catalog:
    """Which deployments a runner serves, and the definition a run of one executes."""

    def deployment_ids(self, client: SyncPrefectClient) -> list[UUID]:
        """The deployments whose due runs to look for (a runner of a work pool asks the pool instead)."""
        raise NotImplementedError

    def definition_for(self, client: SyncPrefectClient, flow_run: Any) -> Definition | None:
        """The definition a run executes, read as it is now; None for a deployment that is not granary's."""
        raise NotImplementedError


class FixedCatalog(Catalog):
    """A fixed set of deployments and their definitions."""

    def __init__(self, definitions: dict[UUID, Definition]):
        self.definitions = definitions

    def deployment_ids(self, client: SyncPrefectClient) -> list[UUID]:
        return list(self.definitions)

    def definition_for(self, client: SyncPrefectClient, flow_run: Any) -> Definition | None:
        return self.definitions.get(flow_run.deployment_id)


class RegistryCatalog(Catalog):
    """The registry in Prefect: every registered task and pipeline (of a work pool, or of none for `serve`), each
    run executing the definition registered when it starts. New registrations are seen within `refresh` seconds,
    or at once when a run of a deployment not seen before falls due."""

    def __init__(self, work_pool: str | None = None, refresh: float = 5.0):
        self.work_pool = work_pool
        self.refresh = refresh
        self._names: dict[UUID, str] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    def deployment_ids(self, client: SyncPrefectClient) -> list[UUID]:
        self._refresh(client, force=False)
        return list(self._names)

    def definition_for(self, client: SyncPrefectClient, flow_run: Any) -> Definition | None:
        from granary_flows.registry import Registry

        if flow_run.deployment_id not in self._names:
            self._refresh(client, force=True)
        name = self._names.get(flow_run.deployment_id)
        if name is None:
            return None
        registry = Registry(client)
        entry = registry.get(name)
        if entry is None or str(entry.deployment_id) != str(flow_run.deployment_id):
            return None
        return registry.linked(entry.model())

    def _refresh(self, client: SyncPrefectClient, force: bool) -> None:
        from granary_flows.registry import Registry

        with self._lock:
            if not force and time.monotonic() - self._read_at < self.refresh:
                return
            self._read_at = time.monotonic()
            self._names = {
                UUID(str(entry.deployment_id)): entry.name
                for entry in Registry(client).entries()
                if entry.deployment_id and entry.work_pool == self.work_pool
            }
