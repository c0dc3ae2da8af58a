"""The whole boundary between the shared execution workflow and a runtime."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from granary_flows.definition import TaskDefinition

LABEL_EXECUTION = "granary.execution-id"
LABEL_TASK = "granary.task"
LABEL_RUNNER = "granary.runner"
LABEL_FLOW_RUN = "granary.flow-run-id"  # the execution's own id, or for a pipeline step, the pipeline run's
# The Prefect server whose run started it: a runner settles only its own server's containers, so that two
# installations on one host (or a test suite beside a user's own server) never touch each other's.
LABEL_SERVER = "granary.server"


def current_server() -> str:
    """The Prefect API this process reports to."""
    import os

    return os.environ.get("PREFECT_API_URL", "")


class Attempt(BaseModel):
    """One attempt of an execution, as the runtime needs it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    execution_id: str
    attempt: int
    task: TaskDefinition
    arguments: dict[str, Any]
    environment: dict[str, str]
    output_dir: Path | None = None  # Docker: the local folder mounted at OUTPUT_DIR
    output_uri: str | None = None  # Batch: where the job writes its outputs itself
    input_dir: Path | None = None
    runner_id: str = ""
    flow_run_id: str = ""  # when it differs from execution_id: a pipeline step's
    command: list[str] | None = None
    volumes: dict[str, dict[str, str]] = {}

    @property
    def owner(self) -> str:
        """The flow run that cancellation and restarts know this attempt by."""
        return self.flow_run_id or self.execution_id


class AttemptOutcome(BaseModel):
    """How an attempt ended. `killed_reason` is set when the platform killed it (time, memory, cancellation)."""

    exit_code: int | None
    killed_reason: str | None = None
    detail: str | None = None  # what the platform said about a failure (Batch's status reason and attempts)
    last_stdout_line: str | None = None
    log_tail: list[str] = []


class Orphan(BaseModel):
    """An execution whose runner died, as a runtime found it."""

    execution_id: str
    what: str  # what became of its container or job
    resumable: bool = False  # its work goes on, and running the execution again picks it up


class Runtime(ABC):
    """Starts an attempt, streams its log lines to `on_line` while it runs, waits, and always cleans up."""

    @abstractmethod
    def run(self, attempt: Attempt, on_line: Callable[[str], None]) -> AttemptOutcome:
        """Run one attempt to its end.

        Raises:
            RuntimeUnavailable: when it could not be started at all (missing image, no engine); nothing is left.
        """

    @abstractmethod
    def stop(self, execution_id: str) -> int:
        """Stop whatever runs for a flow run (cancellation), a pipeline's steps included. Returns how many containers
        or jobs it stopped."""

    @abstractmethod
    def orphans(self, is_dead: Callable[[str], bool]) -> list[Orphan]:
        """Deal with what runners that died (`is_dead(runner_id)`) left behind, one `Orphan` per execution."""
