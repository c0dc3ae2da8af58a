"""The whole boundary between the shared execution workflow (`execution.Execution`) and a runtime.

What differs per runtime lives behind this ABC: whether inputs are fetched for the container first, where its outputs
go, how an attempt runs and is stopped, how its outputs reach the results store, and what a runner that died left.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from granary_flows.cancellation import CancelToken
from granary_flows.definition import RuntimeKind, TaskDefinition
from granary_flows.invocation import Invocation
from granary_flows.policy import Policy
from granary_flows.store import ResultsStore, StoredOutputs

LABEL_EXECUTION = "granary.execution-id"
LABEL_TASK = "granary.task"
LABEL_RUNNER = "granary.runner"
LABEL_ATTEMPT = "granary.attempt"
LABEL_FLOW_RUN = "granary.flow-run-id"  # the execution's own id, or for a pipeline step, the pipeline run's
# The Prefect server whose run started it: a runner settles only its own server's containers, so that two
# installations on one host (or a test suite beside a user's own server) never touch each other's.
LABEL_SERVER = "granary.server"


def run_logger() -> Any:
    """The current run's logger (what a user reads in the run's logs), else granary's own."""
    import logging

    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("granary.runtime")


def current_server() -> str:
    """The Prefect API this process reports to."""
    return os.environ.get("PREFECT_API_URL", "")


class Attempt(BaseModel):
    """One attempt of an execution, as the runtime needs it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    execution_id: str
    flow_run_id: str  # the execution's own, or for a pipeline step, the pipeline run's
    number: int
    task: TaskDefinition
    invocation: Invocation
    work_dir: Path  # this execution's folder on the runner's host
    runner_id: str = ""
    output_dir: Path | None = None  # Docker: the host folder mounted at the task's output path
    output_uri: str | None = None  # Batch: where the job writes its outputs itself
    input_dir: Path | None = None  # Docker: the staged inputs, mounted read-only
    left_container: str | None = None  # Docker: this attempt's container that a dead runner left, found by prepare
    container_id: str | None = None  # Docker: the container that ran, kept until the outcome is stored (`release`)
    cancel: CancelToken = Field(default_factory=CancelToken)
    image_digest: str | None = None  # the image id a Docker attempt ran


class AttemptOutcome(BaseModel):
    """How an attempt ended. `killed_reason` is set when the platform killed it (time, memory, cancellation)."""

    exit_code: int | None
    killed_reason: str | None = None
    detail: str | None = None  # what the platform said about a failure (Batch's status reason and attempts)
    last_stdout_line: str | None = None
    log_tail: list[str] = []


class Collected(BaseModel):
    """An attempt's outputs in the results store, and what was refused on the way (said as warnings)."""

    stored: StoredOutputs
    warnings: list[str] = []


class Orphan(BaseModel):
    """An execution whose runner died, as a runtime found it."""

    execution_id: str  # the flow run it belongs to
    what: str  # what became of its container or job
    resumable: bool = False  # its work goes on, and running the execution again picks it up


class Runtime(ABC):
    """Runs attempts of one kind of task, streams their log lines, waits, and always cleans up."""

    kind: RuntimeKind
    stages_inputs: bool = False  # whether `format: uri` inputs are fetched for the container first

    @abstractmethod
    def prepare(self, attempt: Attempt, store: ResultsStore) -> Attempt:
        """The attempt with its output place set: a host folder to mount, or an `s3://` prefix to write to."""

    @abstractmethod
    def run(self, attempt: Attempt, on_line: Callable[[str], None]) -> AttemptOutcome:
        """Run one attempt to its end (or re-attach to one a runner that died left going).

        Raises:
            RuntimeUnavailable: when it could not be started at all (missing image, no engine); nothing is left.
        """

    @abstractmethod
    def collect(self, attempt: Attempt, store: ResultsStore, policy: Policy) -> Collected:
        """Bring what the attempt wrote into the results store (within the policy's output cap) and list it.

        Raises:
            ExecutionFailed: a `system` error when the outputs exceed the cap or cannot be stored.
        """

    def release(self, attempt: Attempt) -> None:
        """Let go of what an attempt that ran to its end leaves for a runner that dies before its outcome is stored
        to re-attach to (a Docker container, kept until then). Called once the outcome is stored, or the attempt
        failed; nothing for runtimes whose work outlives the runner anyway (Batch)."""
        return None

    def submits_together(self, task: TaskDefinition) -> bool:
        """Whether several executions of this task can start as one submission (`submit_together`)."""
        return False

    def submit_together(self, attempts: list[Attempt]) -> str | None:
        """Start several executions' first attempts, of a task it `submits_together`, as one submission (the children
        of a Batch array job), which `run` then finds already submitted, each its own. Returns what was submitted."""
        return None

    @abstractmethod
    def resuming(self, execution_id: str) -> int | None:
        """The attempt number of work a dead runner left going for this execution, to re-attach to; else None."""

    @abstractmethod
    def stop(self, flow_run_id: str, *, started_elsewhere: bool = True) -> int:
        """Stop whatever runs for a flow run (cancellation), a pipeline's steps included. Returns how many containers
        or jobs it stopped. `started_elsewhere=False` looks only at what this process started (fast: no lookups in
        the results store), which is all there is for granary's own runner."""

    @abstractmethod
    def orphans(self, is_dead: Callable[[str], bool], is_final: Callable[[str], bool]) -> list[Orphan]:
        """Deal with what runners that died (`is_dead(runner_id)`) left behind, one `Orphan` per execution.
        `is_final(flow_run_id)` tells whether its run has ended (or is gone), so that nothing waits for it."""
