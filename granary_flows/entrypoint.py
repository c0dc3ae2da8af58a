"""Entrypoints for Prefect's own workers and runner: `granary_flows.entrypoint:<task>` builds the task's flow, on
import, from its definition in the registry, so that a Prefect worker on any host runs it without the task's file.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from prefect.client.orchestration import get_client

    from granary_flows.flows import flow_for
    from granary_flows.registry import Registry

    with get_client(sync_client=True) as client:
        definition = Registry(client).definition(name)
    return flow_for(definition)
