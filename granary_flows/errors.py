"""The one family of errors granary-flows raises: each says what is wrong in words a user can act on."""

from __future__ import annotations

from granary_flows.words import SpecWord


class ErrorCategory(SpecWord):
    """Why an execution failed, as Seed names it (`job`, `data`), plus `system` for the platform's own faults."""

    JOB = "job"
    DATA = "data"
    SYSTEM = "system"


class GranaryError(Exception):
    """Base of every error granary-flows raises on purpose."""


class DefinitionError(GranaryError):
    """A task definition file is broken.

    Args:
        path: the file at fault.
        problems: one line per problem, each naming the field (and line, where known).
    """

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class ArgumentsInvalid(GranaryError):
    """Arguments break the task's schema; `violations` lists every one as `path: message`."""

    def __init__(self, task: str, violations: list[str]):
        self.task = task
        self.violations = violations
        super().__init__(f"invalid arguments for task {task!r}:\n" + "\n".join(f"  - {v}" for v in violations))


class UnknownTask(GranaryError):
    """No task of that name is registered."""


class StagingError(GranaryError):
    """An input file could not be fetched before the container started."""


class StorageError(GranaryError):
    """The results store cannot be read or written."""


class RuntimeUnavailable(GranaryError):
    """The runtime cannot start the job at all: no Docker engine, a missing image, an unknown queue."""


class ExecutionFailed(GranaryError):
    """The container or job ran and failed.

    Args:
        reason: what went wrong, for a person.
        category: decides whether the task's retry policy retries it.
        exit_code: the container's exit code, where there was one.
    """

    def __init__(
        self, reason: str, category: ErrorCategory, exit_code: int | None = None, log_tail: list[str] | None = None
    ):
        self.reason = reason
        self.category = category
        self.exit_code = exit_code
        self.log_tail = log_tail or []
        super().__init__(reason)


class ExecutionCancelled(GranaryError):
    """The execution was cancelled (from the UI, the CLI or a stopping runner) and its container stopped."""


class ReferenceProblem(GranaryError):
    """A pipeline's `${...}` reference or `when:` condition is malformed, or names nothing at run time."""


class PipelineFailed(GranaryError):
    """A pipeline run ended with steps that failed or could not run; the message names them."""
