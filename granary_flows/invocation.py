"""How one attempt's container is started: its command, environment, standard input and files, built from the task's
conventions (`runtime.docker.arguments` / `runtime.batch.arguments`) so that each anchor's images run unmodified:

- `environment`: `GRANARY_ARGUMENTS` (the JSON document) and one variable per argument, named as Seed does;
- `file`: the JSON document at `$GRANARY_ARGUMENTS_FILE`;
- `last-argument`: the JSON document appended to the command (process-api, SEPEX);
- `stdin`: the JSON document on standard input (GRiD);
- `parameters`: AWS Batch parameters, for job definitions with `Ref::name` in their command (Granary);
- a Seed task's command template, with Seed's variables, and Scale's `$INPUT_METADATA`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel

from granary_flows.contract import ARGUMENTS_FILE, INPUT_METADATA_FILE, as_text, variable_name
from granary_flows.definition import DEFAULT_OUTPUT_DIR, ArgumentPassing, TaskDefinition
from granary_flows.formats import seed


class Invocation(BaseModel):
    """Everything a runtime needs to start one attempt's container or job."""

    command: list[str] | None = None  # None: the image's (or job definition's) own
    entrypoint: list[str] | None = None  # None: the image's own
    environment: dict[str, str] = {}
    stdin: str | None = None  # written to the container's standard input, which is then closed
    arguments_file: str | None = None  # mounted read-only at ARGUMENTS_FILE
    input_metadata: str | None = None  # mounted read-only at INPUT_METADATA_FILE
    output_path: str = DEFAULT_OUTPUT_DIR  # where the output folder is mounted, in the container
    volumes: dict[str, dict[str, str]] = {}  # host path -> {bind, mode}: a Seed task's mounts
    parameters: dict[str, str] = {}  # Batch `Ref::` parameters
    masked: list[str] = []  # secret values it holds, masked wherever a person could read them


def invocation_for(
    task: TaskDefinition,
    arguments: dict[str, Any],
    *,
    execution_id: str,
    attempt: int,
    output_uri: str | None = None,
    secrets: dict[str, str] | None = None,
    input_mib: float = 0.0,
    input_metadata: dict[str, Any] | None = None,
    passable: list[str] | None = None,
    webhook: str | None = None,
) -> Invocation:
    """The invocation of one attempt.

    Args:
        task: the task.
        arguments: the validated arguments as the container sees them (staged inputs as local paths).
        execution_id, attempt: said to the container.
        output_uri: where a Batch job writes its outputs itself; None for Docker (a mounted folder).
        secrets: a Seed task's secret settings, by name.
        input_mib: the staged inputs' size, for Seed's `inputMultiplier`.
        input_metadata: Scale's input context, for Seed tasks.
        passable: variables of the runner's environment the operator lets tasks ask for.
        webhook: Granary's results webhook of the execution, given as GRANARY_WEBHOOK_URL (and the Batch parameter
            WEBHOOK_URL, which Granary's job definitions pass as `Ref::WEBHOOK_URL`).

    Example:
        >>> from granary_flows.definition import TaskDefinition
        >>> task = TaskDefinition.model_validate({"name": "echo", "validator": {"schema": {"type": "object"}},
        ...     "runtime": {"docker": {"image": "pyecho:1", "command": ["python", "main.py"],
        ...                            "arguments": ["last-argument"]}}})
        >>> invocation_for(task, {"text": "hi"}, execution_id="e1", attempt=1).command
        ['python', 'main.py', '{"text": "hi"}']
    """
    document = json.dumps(arguments)
    ways = set(task.argument_passing)
    docker = task.runtime.docker
    batch = task.runtime.batch
    invocation = Invocation()
    environment: dict[str, str] = {}
    # The contract's own variables are written last, over anything an argument, a setting or a task's environment
    # might have named the same (registration refuses such names; a task registered before that rule is still safe).
    contract = {"GRANARY_EXECUTION_ID": execution_id, "GRANARY_TASK": task.name, "GRANARY_ATTEMPT": str(attempt)}
    if docker:
        environment |= docker.environment
        passed = _passed(docker.passEnvironment, passable or [])
        environment |= passed
        invocation.masked += list(passed.values())
        contract["OUTPUT_DIR"] = invocation.output_path = docker.outputDir
        invocation.entrypoint = docker.entrypoint
        invocation.command = docker.command
    else:
        if batch is None or output_uri is None:
            raise ValueError("a Batch job writes its outputs to an OUTPUT_URI")
        contract["OUTPUT_URI"] = output_uri
        invocation.command = batch.command
    if ArgumentPassing.ENVIRONMENT in ways:
        environment |= {variable_name(name): as_text(value) for name, value in arguments.items()}
        contract["GRANARY_ARGUMENTS"] = document
    if ArgumentPassing.FILE in ways:
        contract["GRANARY_ARGUMENTS_FILE"] = ARGUMENTS_FILE
        invocation.arguments_file = document
    if ArgumentPassing.STDIN in ways:
        invocation.stdin = document
    if ArgumentPassing.PARAMETERS in ways:
        invocation.parameters = {name: as_text(value) for name, value in arguments.items()}
    if webhook:
        contract["GRANARY_WEBHOOK_URL"] = webhook
        if ArgumentPassing.PARAMETERS in ways:
            invocation.parameters.setdefault("WEBHOOK_URL", webhook)
    if input_metadata is not None:
        contract["INPUT_METADATA"] = INPUT_METADATA_FILE
        invocation.input_metadata = json.dumps(input_metadata)
    if task.seed:
        environment |= seed.variables(task.seed, arguments, secrets or {}, input_mib)
        invocation.volumes = seed.mount_volumes(task.seed)
        invocation.masked += list((secrets or {}).values())
    invocation.environment = environment | contract
    if task.seed and task.seed.command:
        invocation.command = seed.expand_command(task.seed.command, invocation.environment)
    if ArgumentPassing.LAST_ARGUMENT in ways:
        invocation.command = [*(invocation.command or []), document]
    return invocation


def _passed(asked: list[str], passable: list[str]) -> dict[str, str]:
    """The runner's variables a task asked for and the operator allows; the others are not passed."""
    return {name: os.environ[name] for name in asked if name in passable and name in os.environ}
