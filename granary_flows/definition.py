"""Task definitions as typed models: what a task file under `deployments/` holds once it is read.

The fields follow the task file (see the README's "Registering a task"): a name, a version, Granary's `validator`
(the arguments' JSON Schema), a runtime (`docker` or `batch`), resources, a timeout, retries by error category, exit
codes named as Seed names them, declared outputs and schedules. Files in other formats (Granary task documents, Seed
manifests, process-api plugins) are converted to this shape by `formats/` and read by `loading`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from granary_flows.errors import ErrorCategory
from granary_flows.seed_manifest import SeedInterface
from granary_flows.words import SpecWord

# Letters, digits, `_` and `-`: a Prefect flow and deployment name, a results folder, a container and Batch job name.
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
# Docker's image reference grammar (distribution/reference): what Docker itself would accept.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A first part is a registry only when Docker would read it as one: it has a dot or a port, or is localhost.
_DOMAIN = r"(?:(?:(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/)?"
IMAGE_REFERENCE = re.compile(
    rf"^{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
DEFAULT_OUTPUT_DIR = "/granary/outputs"


class Model(BaseModel):
    """The base of every task-file model: a typo is named as an unknown field instead of being ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RuntimeKind(SpecWord):
    """Where an execution runs."""

    DOCKER = "docker"
    BATCH = "batch"
    PIPELINE = "pipeline"  # a pipeline's steps each run on their task's runtime


class ArgumentPassing(SpecWord):
    """How a container takes its validated arguments (one task may use several)."""

    ENVIRONMENT = "environment"  # GRANARY_ARGUMENTS, and one variable per argument (Seed naming)
    FILE = "file"  # the JSON document at $GRANARY_ARGUMENTS_FILE
    LAST_ARGUMENT = "last-argument"  # the JSON document appended to the command (process-api, SEPEX)
    STDIN = "stdin"  # the JSON document on standard input (GRiD)
    PARAMETERS = "parameters"  # AWS Batch `Ref::name` parameters (Granary's job definitions)


class NetworkAccess(Model):
    """A task's opt-in to network access, which the sandbox denies by default."""

    reason: str = Field(min_length=1, description="Why the algorithm needs the network; shown in its runs.")


class DockerSpec(Model):
    """Run on the local Docker engine, sandboxed."""

    image: str = Field(min_length=1, description="An image reference Docker accepts.")
    command: list[str] | None = Field(default=None, description="Overrides the image's command (CMD).")
    entrypoint: list[str] | None = Field(default=None, description="Overrides the image's ENTRYPOINT.")
    environment: dict[str, str] = Field(default_factory=dict)
    passEnvironment: list[str] = Field(
        default_factory=list,
        description="Variables of the runner's environment passed on (process-api's envVars); only those the "
        "operator allows in GRANARY_PASS_ENVIRONMENT are.",
    )
    network: NetworkAccess | None = None
    digest: str | None = Field(
        default=None,
        description="The image's id (sha256:...) pinned when the task was registered (GRANARY_PIN_IMAGES); a run "
        "of an image that changed since is refused.",
    )
    arguments: list[ArgumentPassing] = Field(
        default_factory=lambda: [ArgumentPassing.ENVIRONMENT, ArgumentPassing.FILE],
        description="How the container takes its arguments.",
    )
    outputDir: str = Field(
        default=DEFAULT_OUTPUT_DIR,
        pattern=r"^/",
        description="Where the container writes its outputs (GRiD's /grid); mounted writable there.",
    )

    @model_validator(mode="after")
    def _checked(self) -> DockerSpec:
        if not IMAGE_REFERENCE.match(self.image):
            raise ValueError(f"image {self.image!r} is not an image reference Docker accepts (e.g. registry/name:tag)")
        if ArgumentPassing.PARAMETERS in self.arguments:
            raise ValueError(
                "'parameters' (Batch Ref::) is for batch tasks; a Docker task takes environment, file, "
                "last-argument or stdin"
            )
        if self.outputDir.rstrip("/") in ("", "/granary/inputs", "/proc", "/sys", "/dev"):
            raise ValueError(f"outputDir {self.outputDir!r} cannot be mounted for outputs")
        return self


class BatchSpec(Model):
    """Run as an AWS Batch job."""

    jobDefinition: str = Field(min_length=1)
    jobQueue: str = Field(min_length=1)
    command: list[str] | None = Field(default=None, description="Overrides the job definition's command.")
    arguments: list[ArgumentPassing] = Field(
        default_factory=lambda: [ArgumentPassing.ENVIRONMENT, ArgumentPassing.PARAMETERS],
        description="How the job takes its arguments.",
    )
    array: bool = Field(
        default=False,
        description="The job reads its item by AWS_BATCH_JOB_ARRAY_INDEX: a pipeline step mapped over this task runs "
        "as one array job.",
    )

    @model_validator(mode="after")
    def _checked(self) -> BatchSpec:
        impossible = {ArgumentPassing.STDIN, ArgumentPassing.FILE} & set(self.arguments)
        if impossible:
            names = " and ".join(sorted(a.value for a in impossible))
            raise ValueError(
                f"a Batch job cannot take its arguments by {names}: use environment, parameters or last-argument"
            )
        if ArgumentPassing.LAST_ARGUMENT in self.arguments and not self.command:
            raise ValueError("last-argument needs the job's command here, to append the arguments to")
        if self.array and set(self.arguments) != {ArgumentPassing.ENVIRONMENT}:
            raise ValueError(
                "the children of an array job share one command and its parameters, and each reads its own "
                "environment: an array task takes its arguments by `arguments: [environment]` only"
            )
        return self


class RuntimeSpec(Model):
    """Exactly one of `docker` or `batch`."""

    docker: DockerSpec | None = None
    batch: BatchSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RuntimeSpec:
        if (self.docker is None) == (self.batch is None):
            raise ValueError("give exactly one of 'docker' or 'batch'")
        return self


class Resources(Model):
    """Limits for one execution: CPUs, memory in MiB, GPUs."""

    cpus: float = Field(default=1.0, gt=0)
    memory: int = Field(default=512, ge=6, description="MiB")
    gpus: int = Field(default=0, ge=0)
    sharedMemory: int | None = Field(default=None, ge=1, description="MiB of /dev/shm")


class RetryPolicy(Model):
    """How often a failed execution is retried, after how long, and for which error categories."""

    attempts: int = Field(default=0, ge=0, le=100, description="Retries after the first attempt.")
    delay: float = Field(default=0, ge=0, description="Seconds between attempts.")
    on: list[ErrorCategory] = Field(default_factory=lambda: [ErrorCategory.JOB, ErrorCategory.SYSTEM])


class ErrorSpec(Model):
    """What an exit code means (Seed's `errors`)."""

    name: str
    category: ErrorCategory = ErrorCategory.JOB
    title: str | None = None
    description: str | None = None


class OutputFile(Model):
    """An output the container must (or may) write, matched by a glob pattern in its output folder."""

    name: str
    pattern: str
    required: bool = True
    multiple: bool = False
    mediaType: str | None = None


class OutputValue(Model):
    """An output that is a value the container reports (`plugin_results`, or one of its keys), not a file."""

    name: str
    title: str | None = None
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")


class Outputs(Model):
    """What a task produces: the files it writes (matched by pattern) and the values it reports."""

    files: list[OutputFile] = Field(default_factory=list)
    values: list[OutputValue] = Field(default_factory=list)


class ScheduleSpec(Model):
    """One of `cron`, `interval` (seconds) or `rrule`, with the arguments its runs get."""

    cron: str | None = None
    interval: float | None = Field(default=None, gt=0)
    rrule: str | None = None
    timezone: str | None = None
    active: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleSpec:
        if sum(value is not None for value in (self.cron, self.interval, self.rrule)) != 1:
            raise ValueError("give exactly one of 'cron', 'interval' or 'rrule'")
        return self


class Validator(Model):
    """Granary's validator: the arguments' JSON Schema (draft-07 unless its `$schema` says otherwise)."""

    schema_: dict[str, Any] = Field(alias="schema")


class Registered(Model):
    """What a task and a pipeline both are: a named, versioned flow whose arguments follow a JSON Schema."""

    name: str = Field(pattern=TASK_NAME.pattern)
    title: str | None = None
    description: str | None = None
    version: str = "1.0.0"
    validator: Validator
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    access: list[str] = Field(
        default_factory=list, description="Roles that may execute it through the HTTP API; none: every user."
    )
    jobControlOptions: list[str] = Field(
        default_factory=lambda: ["sync-execute", "async-execute", "dismiss"],
        description="How the HTTP API may execute it (OGC API - Processes).",
    )
    source: str | None = Field(default=None, exclude=True, description="The file it was read from.")

    @property
    def arguments_schema(self) -> dict[str, Any]:
        return self.validator.schema_

    @property
    def argument_names(self) -> list[str]:
        return list(self.arguments_schema.get("properties", {}))


class TaskDefinition(Registered):
    """A registered container algorithm."""

    runtime: RuntimeSpec
    resources: Resources = Field(default_factory=Resources)
    timeout: float | None = Field(default=None, gt=0, description="Seconds; the container is killed after it.")
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    errors: dict[int, ErrorSpec] = Field(default_factory=dict)
    outputs: Outputs = Field(default_factory=Outputs)
    seed: SeedInterface | None = Field(default=None, description="Seed's execution semantics, for Seed tasks.")

    @property
    def runtime_kind(self) -> RuntimeKind:
        return RuntimeKind.DOCKER if self.runtime.docker else RuntimeKind.BATCH

    @property
    def image(self) -> str | None:
        return self.runtime.docker.image if self.runtime.docker else None

    @property
    def argument_passing(self) -> list[ArgumentPassing]:
        spec = self.runtime.docker or self.runtime.batch
        assert spec is not None
        return spec.arguments

    @property
    def value_outputs(self) -> list[OutputValue]:
        """The values it reports: those its `outputs.values` declares, and a Seed task's JSON outputs
        (`seed.outputs.json`), each with its type."""
        seed_values = [
            OutputValue.model_validate({"name": value.name, "schema": {"type": value.type}})
            for value in (self.seed.outputs_json if self.seed else [])
        ]
        return [*self.outputs.values, *seed_values]

    @property
    def input_names(self) -> list[str]:
        """Names an input side-car (`<input>.metadata.json`) may carry: Seed's input names, else the arguments'."""
        if self.seed:
            return [file.name for file in self.seed.files] + [value.name for value in self.seed.values]
        return self.argument_names
