"""The shared execution workflow, written once for every runtime: validate, stage, attempt (with retries by error
category), store and collect results, report."""

from __future__ import annotations

import contextvars
import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel

from granary_flows import artifacts, seed, stac
from granary_flows.contract import environment, parse_progress
from granary_flows.definition import TaskDefinition
from granary_flows.errors import ErrorCategory, ExecutionCancelled, ExecutionFailed, StorageError
from granary_flows.layout import unsent_folder
from granary_flows.results import CollectedResults, ResultAsset, collect
from granary_flows.runtimes.base import Attempt, AttemptOutcome, Runtime
from granary_flows.sidecars import read_sidecars
from granary_flows.staging import stage_inputs, uri_arguments
from granary_flows.store import EXECUTION_DOCUMENT, ResultsStore, StoredOutputs
from granary_flows.validation import prepare_arguments

# Execution ids whose cancellation was asked for; the runner adds to it before it stops their containers, so that
# the attempt ends as cancelled instead of failed and is never retried.
cancel_requested: set[str] = set()


class ExecutionDocument(BaseModel):
    """The results document of one execution: the flow run's return value and `granary-execution.json`."""

    execution_id: str
    task: str
    version: str
    status: str
    arguments: dict[str, Any]
    results: list[ResultAsset]
    value: Any = None
    source: str | None = None
    results_uri: str
    image: str | None = None
    exit_code: int | None = None
    attempts: int = 0
    duration: float = 0.0
    reason: str | None = None
    outputs: dict[str, Any] = {}
    warnings: list[str] = []
    stac_item: str | None = None
    started: datetime
    finished: datetime


def run_execution(
    definition: TaskDefinition,
    arguments: dict[str, Any],
    *,
    store: ResultsStore,
    runtime: Runtime,
    runner_id: str = "",
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run one execution of `definition` inside the current flow run.

    A task's execution is its flow run, and has its id; a pipeline step's execution has an id of its own
    (`execution_id`), and its containers are found by the flow run's id all the same, for cancellation.

    Returns:
        The results document (`ExecutionDocument`) as JSON-ready data.

    Raises:
        ArgumentsInvalid: before anything starts, listing every violation.
        StagingError: when an input could not be fetched, before any container exists.
        ExecutionFailed: when the last attempt failed; the summary artifact says why.
        ExecutionCancelled: when the execution was cancelled.
    """
    logger = get_run_logger()
    flow_run_id = str(current_flow_run.id)
    execution_id = execution_id or flow_run_id
    started = datetime.now(timezone.utc)
    validated = prepare_arguments(definition.name, definition.arguments_schema, arguments)
    summary: dict[str, Any] = {
        "task": definition.name,
        "version": definition.version,
        "execution_id": execution_id,
        "image": definition.image,
        "arguments": validated,
        "results_uri": store.execution_uri(definition.name, execution_id),
    }
    progress = artifacts.ProgressArtifact(definition.name)
    attempts: list[int] = []
    secrets = seed.resolve_secrets(definition.seed) if definition.seed else {}
    mask = _masker(list(secrets.values()))
    with tempfile.TemporaryDirectory(prefix=f"granary-{execution_id[:8]}-") as work:
        container_arguments, input_dir = _stage(definition, validated, Path(work))

        def attempt_once() -> tuple[AttemptOutcome, CollectedResults, dict[str, Any]]:
            number = current_task_run.run_count or 1
            attempts.append(number)
            if number > 1:
                logger.info("attempt %d of %d", number, definition.retries.attempts + 1)
            output_dir, output_uri = None, None
            if definition.runtime_kind == "batch":
                output_uri = store.execution_uri(definition.name, execution_id)
            else:
                output_dir = Path(work) / f"attempt-{number}" / "outputs"
                output_dir.mkdir(parents=True)
            variables = environment(container_arguments, execution_id, definition.name, number, output_uri)
            command, volumes = None, {}
            if definition.seed:
                variables |= seed.variables(definition.seed, container_arguments, secrets, _size_mib(input_dir))
                command = seed.expand_command(definition.seed.command, variables) if definition.seed.command else None
                volumes = seed.mount_volumes(definition.seed)
            attempt = Attempt(
                execution_id=execution_id,
                attempt=number,
                task=definition,
                arguments=container_arguments,
                environment=variables,
                output_dir=output_dir,
                output_uri=output_uri,
                input_dir=input_dir,
                runner_id=runner_id,
                flow_run_id=flow_run_id,
                command=command,
                volumes=volumes,
            )
            if flow_run_id in cancel_requested:  # cancelled while staging: start nothing
                raise ExecutionCancelled(f"execution {execution_id} was cancelled before its container started")
            outcome = runtime.run(attempt, _line_handler(logger, progress, mask))
            _raise_for_failure(definition, flow_run_id, outcome)
            if output_dir is None:  # the job wrote its outputs to OUTPUT_URI itself
                stored = store.list_outputs(definition.name, execution_id)
            else:
                stored = _upload(store, output_dir, definition.name, execution_id)
            collected = collect(
                stored, store.read_bytes, outcome.last_stdout_line, definition.outputs.files, _input_names(definition)
            )
            return outcome, collected, _seed_outputs(definition, stored, store)

        try:
            outcome, collected, outputs = _attempt_task(definition)(attempt_once)
        except ExecutionFailed as err:
            summary |= {
                "status": "failed",
                "reason": err.reason,
                "exit_code": err.exit_code,
                "attempts": len(attempts),
                "duration": _seconds_since(started),
            }
            artifacts.record_summary(summary, [mask(line) for line in err.log_tail])
            raise
    document = ExecutionDocument(
        **summary,
        status="successful",
        results=collected.assets,
        value=collected.value,
        outputs=outputs,
        source=collected.source,
        exit_code=outcome.exit_code,
        attempts=len(attempts),
        duration=_seconds_since(started),
        started=started,
        finished=datetime.now(timezone.utc),
    )
    sidecars, document.warnings = read_sidecars(document.results, store.read_bytes)
    for warning in document.warnings:
        logger.warning(warning)
    item = stac.execution_item(document.model_dump(mode="json"), sidecars)
    document.stac_item = stac.publish(store, definition.name, definition.title, definition.description, item)
    results = document.model_dump(mode="json")
    store.write_json(f"{definition.name}/{execution_id}/{EXECUTION_DOCUMENT}", results)
    artifacts.record_results(definition.name, document.results, document.stac_item, store.presign)
    artifacts.record_summary(results, [mask(line) for line in outcome.log_tail])
    logger.info("%d result(s) stored under %s", len(document.results), document.results_uri)
    return results


def _stage(definition: TaskDefinition, arguments: dict[str, Any], work: Path) -> tuple[dict[str, Any], Path | None]:
    """Fetch `format: uri` inputs for local Docker; Batch containers read their URIs themselves."""
    uris = uri_arguments(definition.arguments_schema, arguments)
    if definition.runtime_kind != "docker" or not uris:
        return arguments, None
    input_dir = work / "inputs"
    staged = stage_inputs(uris, input_dir)
    get_run_logger().info("staged %s", ", ".join(f"{name} <- {uris[name]}" for name in staged))
    return arguments | staged, input_dir


def _attempt_task(definition: TaskDefinition) -> Callable[[Callable[[], Any]], Any]:
    """A Prefect task run per execution whose retries follow the task's policy, so each attempt shows in the run."""
    policy = definition.retries

    def retry_on_category(_task: Any, _task_run: Any, state: Any) -> bool:
        error = state.data
        return isinstance(error, ExecutionFailed) and error.category in policy.on

    @task(
        name=f"run-{definition.name}",
        retries=policy.attempts,
        retry_delay_seconds=policy.delay,
        retry_condition_fn=retry_on_category,
        persist_result=False,
        cache_policy=NO_CACHE,
    )
    def attempt(run_once: Callable[[], Any]) -> Any:
        return run_once()

    return attempt


def _line_handler(
    logger: Any, progress: artifacts.ProgressArtifact, mask: Callable[[str], str]
) -> Callable[[str], None]:
    """Each container line goes to the run's logs, masked; progress lines also drive the progress artifact."""
    context = contextvars.copy_context()

    def on_line(line: str) -> None:
        parsed = parse_progress(line)
        if parsed is not None:
            context.run(progress.update, *parsed)
        logger.info(mask(line))

    return on_line


def _masker(secrets: list[str]) -> Callable[[str], str]:
    """Replaces secret values wherever a container line would show them (logs, the summary's last lines)."""

    def mask(line: str) -> str:
        for secret in secrets:
            if secret:
                line = line.replace(secret, "****")
        return line

    return mask


def _size_mib(folder: Path | None) -> float:
    if folder is None:
        return 0.0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / (1024 * 1024)


def _input_names(definition: TaskDefinition) -> list[str]:
    """Names an input annotation may carry: Seed's input names, else the arguments' names."""
    if definition.seed:
        return [file.name for file in definition.seed.files] + [value.name for value in definition.seed.values]
    return definition.argument_names


def _upload(store: ResultsStore, output_dir: Path, task: str, execution_id: str) -> StoredOutputs:
    """Store what the container wrote; if that fails, keep it on this machine and fail the attempt saying where."""
    try:
        return store.put_outputs(output_dir, task, execution_id)
    except StorageError as err:
        kept = unsent_folder(task, execution_id)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(output_dir, kept)
        raise ExecutionFailed(f"{err}; the outputs are kept in {kept}", ErrorCategory.SYSTEM) from err


def _seed_outputs(definition: TaskDefinition, stored: StoredOutputs, store: ResultsStore) -> dict[str, Any]:
    """The JSON outputs a Seed task declares, from `seed.outputs.json`."""
    if not definition.seed or not definition.seed.outputs_json:
        return {}
    uri = stored.uris.get(seed.OUTPUTS_FILE)
    try:
        document = json.loads(store.read_bytes(uri)) if uri else {}
        return seed.outputs_from(document, definition.seed.outputs_json)
    except ValueError as err:
        raise ExecutionFailed(str(err), ErrorCategory.JOB) from err


def _raise_for_failure(definition: TaskDefinition, flow_run_id: str, outcome: AttemptOutcome) -> None:
    if flow_run_id in cancel_requested:
        raise ExecutionCancelled(f"flow run {flow_run_id} was cancelled; its container was stopped")
    platform = f" ({outcome.detail})" if outcome.detail else ""
    if outcome.killed_reason:
        reason = outcome.killed_reason + platform
        raise ExecutionFailed(reason, ErrorCategory.SYSTEM, outcome.exit_code, outcome.log_tail)
    if outcome.exit_code == 0:
        return
    known = definition.errors.get(outcome.exit_code) if outcome.exit_code is not None else None
    if known:
        detail = f": {known.description}" if known.description else ""
        reason = f"exit code {outcome.exit_code} ({known.name}, a {known.category.value} error){detail}{platform}"
        raise ExecutionFailed(reason, known.category, outcome.exit_code, outcome.log_tail)
    code = "no exit code" if outcome.exit_code is None else f"exit code {outcome.exit_code}"
    raise ExecutionFailed(f"{code}{platform}", ErrorCategory.JOB, outcome.exit_code, outcome.log_tail)


def _seconds_since(started: datetime) -> float:
    return round((datetime.now(timezone.utc) - started).total_seconds(), 3)
