"""granary-flows: containerized geospatial algorithms as Prefect flows, on local Docker or AWS Batch."""

from typing import Any

from granary_flows.definition import TaskDefinition
from granary_flows.loading import load_definition

__all__ = ["TaskDefinition", "build_flow", "load_definition"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Importing Prefect costs about 1.5 s and fixes its settings from the environment at that moment: only pay it,
    # and only fix them, when a flow is actually built.
    if name == "build_flow":
        from granary_flows.flows import build_flow

        return build_flow
    raise AttributeError(name)
