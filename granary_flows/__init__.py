"""granary-flows: containerized geospatial algorithms as Prefect flows, on local Docker or AWS Batch.

Example:
    >>> from granary_flows import flow_for, load_definition
    >>> hello = flow_for(load_definition("deployments/hello.yaml"))  # doctest: +SKIP
    >>> hello(name="Ada")  # doctest: +SKIP
"""

from typing import Any

__all__ = ["TaskDefinition", "flow_for", "load_definition"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Importing Prefect costs about 1.5 s and fixes its settings from the environment at that moment, and the task
    # model brings jsonschema (3 s of its format checkers): only pay them when asked, so that a module of the package
    # (the server process, the CLI's quick commands) starts without them.
    if name == "flow_for":
        from granary_flows.flows import flow_for

        return flow_for
    if name == "TaskDefinition":
        from granary_flows.definition import TaskDefinition

        return TaskDefinition
    if name == "load_definition":
        from granary_flows.loading import load_definition

        return load_definition
    raise AttributeError(f"module 'granary_flows' has no attribute {name!r}")
