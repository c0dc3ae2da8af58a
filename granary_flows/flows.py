"""Each task becomes a Prefect flow named after it, taking the task's arguments as flat parameters."""

from __future__ import annotations

import inspect
from typing import Any

from prefect import Flow, State, flow
from prefect.client.schemas.objects import FlowRun

from granary_flows.definition import TaskDefinition
from granary_flows.execution import run_execution
from granary_flows.runtimes.base import Runtime
from granary_flows.store import ResultsStore


def build_flow(
    definition: TaskDefinition, store: ResultsStore | None = None, runtime: Runtime | None = None, runner_id: str = ""
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that executes `definition`.

    Its signature has one keyword-only parameter per argument, all defaulting to None, so that a deployment
    accepts `-p name=value` and a missing required argument is reported by our validation, with the others.

    Example:
        >>> ndvi = build_flow(load_definition("deployments/ndvi.yaml"))  # doctest: +SKIP
        >>> ndvi(redBand=3, nirBand=4, tiffLocation="file:///data/scene.tif")  # doctest: +SKIP
    """

    def store_and_runtime() -> tuple[ResultsStore, Runtime]:
        results = store or ResultsStore()
        return results, runtime or runtime_for(definition, results)

    def execute(**arguments: Any) -> dict[str, Any]:
        results, chosen = store_and_runtime()
        return run_execution(definition, arguments, store=results, runtime=chosen, runner_id=runner_id)

    def stop_what_runs(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
        # Prefect's own runner and workers kill the flow's process on cancellation, which would leave its container
        # or Batch job running; they call this hook afterwards. (granary's in-process runner stops them itself.)
        store_and_runtime()[1].stop(str(flow_run.id))

    execute.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in definition.argument_names]
    )
    execute.__name__ = definition.name.replace("-", "_")
    execute.__doc__ = definition.description or definition.title
    return flow(
        name=definition.name,
        version=definition.version,
        description=definition.description or definition.title,
        persist_result=True,
        result_serializer="json",
        validate_parameters=False,
        log_prints=False,
        on_cancellation=[stop_what_runs],
    )(execute)


_docker_runtime: Runtime | None = None


def runtime_for(definition: TaskDefinition, store: ResultsStore) -> Runtime:
    """The runtime a task asks for; the Docker one is shared by every flow of a process."""
    global _docker_runtime
    if definition.runtime_kind == "batch":
        from granary_flows.runtimes.batch import BatchRuntime

        return BatchRuntime(store)
    if _docker_runtime is None:
        from granary_flows.runtimes.docker import DockerRuntime

        _docker_runtime = DockerRuntime()
    return _docker_runtime
