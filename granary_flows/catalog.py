"""Which deployments a runner serves, and the definition each run executes: the registry in Prefect (`granary
serve`, `granary worker`), or a fixed set of definitions (tests, benchmarks)."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient

from granary_flows.blocks import Entry
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
    run executing the definition registered when it was created, or a later one. New registrations are seen within
    `refresh` seconds, or at once when a run of a deployment not seen before falls due.

    A task's definition is read with the others (every `refresh` seconds) and kept: a run whose deployment version
    (`Entry.deployment_version`, recorded when the run was created) is the kept one's executes it without another
    read; any other run reads its definition as registered now. A pipeline's is always read, with its tasks'."""

    def __init__(self, work_pool: str | None = None, refresh: float = 5.0):
        self.work_pool = work_pool
        self.refresh = refresh
        self._entries: dict[UUID, Entry] = {}
        self._models: dict[str, Definition] = {}  # a deployment version -> its task's definition
        self._read_at = 0.0
        self._lock = threading.Lock()

    def deployment_ids(self, client: SyncPrefectClient) -> list[UUID]:
        self._refresh(client, force=False)
        return list(self._entries)

    def definition_for(self, client: SyncPrefectClient, flow_run: Any) -> Definition | None:
        from granary_flows.registry import Registry

        if flow_run.deployment_id not in self._entries:
            self._refresh(client, force=True)
        kept = self._entries.get(flow_run.deployment_id)
        if kept is None:
            return None
        if kept.kind == "task" and flow_run.deployment_version == kept.deployment_version:
            return self._model(kept)
        registry = Registry(client)
        entry = registry.get(kept.name)
        if entry is None or str(entry.deployment_id) != str(flow_run.deployment_id):
            return None
        if entry.kind == "task":
            with self._lock:
                self._entries[flow_run.deployment_id] = entry
            return self._model(entry)
        return registry.linked(entry.model())

    def _model(self, entry: Entry) -> Definition:
        with self._lock:
            version = entry.deployment_version
            if version not in self._models:
                self._models = {version: entry.model()} | {
                    e.deployment_version: self._models[e.deployment_version]
                    for e in self._entries.values()
                    if e.deployment_version in self._models  # only those still registered are kept
                }
            return self._models[version]

    def _refresh(self, client: SyncPrefectClient, force: bool) -> None:
        from granary_flows.registry import Registry

        with self._lock:
            if not force and time.monotonic() - self._read_at < self.refresh:
                return
            self._read_at = time.monotonic()
            self._entries = {
                UUID(str(entry.deployment_id)): entry
                for entry in Registry(client).entries()
                if entry.deployment_id and entry.work_pool == self.work_pool
            }
