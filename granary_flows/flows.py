"""Each task and each pipeline becomes a Prefect flow named after it, taking its arguments as flat parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from prefect import Flow, State, flow
from prefect.client.schemas.objects import FlowRun
from prefect.task_runners import ThreadPoolTaskRunner

from granary_flows.definition import Definition, TaskDefinition
from granary_flows.execution import run_execution
from granary_flows.pipeline import PipelineDefinition
from granary_flows.runtimes.base import Runtime
from granary_flows.store import ResultsStore


def flow_for(
    definition: Definition, store: ResultsStore, runtimes: dict[str, Runtime], runner_id: str = ""
) -> Flow[..., dict[str, Any]]:
    """The flow of a task or a pipeline, with the runtimes of a runner (`granary serve`, `granary worker`)."""
    if isinstance(definition, PipelineDefinition):
        return build_pipeline_flow(definition, store, runtimes, runner_id)
    return build_flow(definition, store, runtimes[definition.runtime_kind], runner_id)


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
        return results, runtime or runtime_for(definition.runtime_kind, results)

    def execute(**arguments: Any) -> dict[str, Any]:
        results, chosen = store_and_runtime()
        return run_execution(definition, arguments, store=results, runtime=chosen, runner_id=runner_id)

    return _as_flow(definition, execute, lambda: [store_and_runtime()[1]])


def build_pipeline_flow(
    pipeline: PipelineDefinition,
    store: ResultsStore | None = None,
    runtimes: dict[str, Runtime] | None = None,
    runner_id: str = "",
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that runs a pipeline's steps as task runs, up to `concurrency` at once."""

    def store_and_runtimes() -> tuple[ResultsStore, dict[str, Runtime]]:
        results = store or ResultsStore()
        return results, runtimes or {kind: runtime_for(kind, results) for kind in pipeline.runtime_kinds}

    def execute(**arguments: Any) -> dict[str, Any]:
        from granary_flows.pipeline_run import run_pipeline

        results, chosen = store_and_runtimes()
        return run_pipeline(pipeline, arguments, store=results, runtimes=chosen, runner_id=runner_id)

    return _as_flow(
        pipeline,
        execute,
        lambda: list(store_and_runtimes()[1].values()),
        task_runner=ThreadPoolTaskRunner(max_workers=pipeline.concurrency),
    )


def _as_flow(
    definition: Definition,
    execute: Callable[..., dict[str, Any]],
    runtimes: Callable[[], list[Runtime]],
    task_runner: Any = None,
) -> Flow[..., dict[str, Any]]:
    def stop_what_runs(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
        # Prefect's own runner and workers kill the flow's process on cancellation, which would leave its containers
        # or Batch jobs running; they call this hook afterwards. (granary's in-process runner stops them itself.)
        for runtime in runtimes():
            runtime.stop(str(flow_run.id))

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
        task_runner=task_runner,
    )(execute)


_docker_runtime: Runtime | None = None


def runtime_for(kind: str, store: ResultsStore) -> Runtime:
    """The runtime of a kind (`docker`, `batch`); the Docker one is shared by every flow of a process."""
    global _docker_runtime
    if kind == "batch":
        from granary_flows.runtimes.batch import BatchRuntime

        return BatchRuntime(store)
    if _docker_runtime is None:
        from granary_flows.runtimes.docker import DockerRuntime

        _docker_runtime = DockerRuntime()
    return _docker_runtime
