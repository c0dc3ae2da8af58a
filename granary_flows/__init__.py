"""granary-flows: containerized geospatial algorithms as Prefect flows, on local Docker or AWS Batch."""

from granary_flows.definition import TaskDefinition, load_definition
from granary_flows.flows import build_flow

__all__ = ["TaskDefinition", "build_flow", "load_definition"]
__version__ = "0.1.0"
