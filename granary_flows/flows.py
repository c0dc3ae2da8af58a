"""Each task and each pipeline becomes a Prefect flow named after it, taking its arguments as flat parameters."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Flow, State, flow
from prefect.client.schemas.objects import FlowRun
from prefect.filesystems import WritableFileSystem
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from granary_flows.cancellation import current_token
from granary_flows.definition import RuntimeKind
from granary_flows.errors import ExecutionCancelled
from granary_flows.execution import Execution
from granary_flows.loading import Definition
from granary_flows.masking import install_log_masking
from granary_flows.pipeline import PipelineDefinition
from granary_flows.runtimes.base import Runtime
from granary_flows.store import ResultsStore


def flow_for(
    definition: Definition,
    store: ResultsStore | None = None,
    runtimes: dict[RuntimeKind, Runtime] | None = None,
    runner_id: str = "",
    result_storage: WritableFileSystem | Path | None = None,
) -> Flow[..., dict[str, Any]]:
    """The Prefect flow that executes a task or a pipeline.

    Its signature has one keyword-only parameter per argument, all defaulting to None, so that a deployment
    accepts `-p name=value` and a missing required argument is reported by our validation, with the others. The run
    is cancelled through the token the runner sets (`cancellation.running_with`).

    Args:
        definition: the task or pipeline.
        store: the results store; default `ResultsStore()` (as configured), made when the flow first runs.
        runtimes: the runtimes of a runner (`granary serve`, `granary worker`); default one of each kind per process.
        runner_id: carried by the containers and jobs it starts.
        result_storage: where Prefect keeps the run's return value (the results document); default Prefect's
            default, which the engine then asks the server for at every run (a runner resolves it once).

    Example:
        >>> hello = flow_for(load_definition("deployments/hello.yaml"))  # doctest: +SKIP
        >>> hello(name="Ada")  # doctest: +SKIP
    """
    install_log_masking()  # what an execution logs is masked with its masker, whoever handles the record
    kinds = definition.runtime_kinds if isinstance(definition, PipelineDefinition) else {definition.runtime_kind}

    def store_and_runtimes() -> tuple[ResultsStore, dict[RuntimeKind, Runtime]]:
        results = store or ResultsStore()
        return results, runtimes or {kind: default_runtime(kind, results) for kind in kinds}

    def execute(**arguments: Any) -> Any:
        results, chosen = store_and_runtimes()
        try:
            if isinstance(definition, PipelineDefinition):
                from granary_flows.pipeline_run import run_pipeline

                return run_pipeline(
                    definition, arguments, store=results, runtimes=chosen, runner_id=runner_id, cancel=current_token()
                )
            return Execution(
                definition,
                arguments,
                store=results,
                runtime=chosen[definition.runtime_kind],
                runner_id=runner_id,
                cancel=current_token(),
            ).run()
        except ExecutionCancelled as err:  # a person stopped it: the run ends Cancelled, saying why, not Failed
            return Cancelled(message=f"{err}; its containers were stopped")

    task_runner: ThreadPoolTaskRunner[Any] | None = None
    if isinstance(definition, PipelineDefinition):
        task_runner = ThreadPoolTaskRunner(max_workers=definition.concurrency)
    return _as_flow(definition, execute, lambda: list(store_and_runtimes()[1].values()), task_runner, result_storage)


def _as_flow(
    definition: Definition,
    execute: Callable[..., Any],
    runtimes: Callable[[], list[Runtime]],
    task_runner: Any = None,
    result_storage: WritableFileSystem | Path | None = None,
) -> Flow[..., dict[str, Any]]:
    def stop_what_runs(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
        # Prefect's own runner and workers kill the flow's process on cancellation, which would leave its containers
        # or Batch jobs running; they call this hook afterwards. granary's in-process runner stopped them before it
        # cancelled the run's token: looking again would only delay the Cancelled state.
        if current_token().cancelled:
            return
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
        result_storage=result_storage,
        result_serializer="json",
        validate_parameters=False,
        log_prints=False,
        on_cancellation=[stop_what_runs],
        task_runner=task_runner,
    )(execute)


_shared: dict[RuntimeKind, Runtime] = {}
_shared_lock = threading.Lock()


def default_runtime(kind: RuntimeKind, store: ResultsStore) -> Runtime:
    """The runtime of a kind for flows run outside granary's runner; the Docker one is shared by the process."""
    if kind is RuntimeKind.BATCH:
        from granary_flows.runtimes.batch import BatchRuntime

        return BatchRuntime(store)
    with _shared_lock:
        if kind not in _shared:
            from granary_flows.runtimes.docker import DockerRuntime

            _shared[kind] = DockerRuntime()
        return _shared[kind]
