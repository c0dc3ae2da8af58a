"""Entrypoints for Prefect's own workers: `granary_flows.entrypoint:<task>` builds the task's flow on import.

Deployments made by `granary deploy` point here, so a process worker started in the project folder (or with
`GRANARY_DEPLOYMENTS` set) runs them without granary's in-process runner.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from granary_flows.definition import find_definition


def deployments_path() -> Path:
    return Path(os.environ.get("GRANARY_DEPLOYMENTS", "deployments"))


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from granary_flows.flows import build_flow, build_pipeline_flow
    from granary_flows.pipeline import PipelineDefinition

    definition = find_definition(name, [deployments_path()])
    if isinstance(definition, PipelineDefinition):
        return build_pipeline_flow(definition)
    return build_flow(definition)
