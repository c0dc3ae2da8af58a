"""Task definitions: the files under `deployments/`, read into typed models.

A definition is our YAML/JSON task file (see DESIGN.md) or a Granary task document (`name`, `validator.schema`,
`jobDefinition`, `jobQueue`), which becomes a task whose runtime is AWS Batch. Errors name the file, the field and,
where the file has one, the line.
"""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import yaml
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from granary_flows.errors import DefinitionError, ErrorCategory, UnknownTask
from granary_flows.locations import at, describe
from granary_flows.seed import SeedInterface, is_manifest, parse_manifest, task_document

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")  # seed.manifest.json included


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so that `retries.on` stays a key, not the boolean True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Model(BaseModel):
    # Typos in a task file are caught and named instead of being silently ignored.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NetworkAccess(_Model):
    """A task's opt-in to network access, which the sandbox denies by default."""

    reason: str = Field(min_length=1, description="Why the algorithm needs the network; shown in its runs.")


class DockerRuntime(_Model):
    """Run on the local Docker engine."""

    image: str = Field(min_length=1)
    command: list[str] | None = Field(default=None, description="Overrides the image's command.")
    environment: dict[str, str] = Field(default_factory=dict)
    network: NetworkAccess | None = None


class BatchRuntime(_Model):
    """Run as an AWS Batch job."""

    jobDefinition: str = Field(min_length=1)
    jobQueue: str = Field(min_length=1)


class Runtime(_Model):
    """Exactly one of `docker` or `batch`."""

    docker: DockerRuntime | None = None
    batch: BatchRuntime | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Runtime:
        if (self.docker is None) == (self.batch is None):
            raise ValueError("give exactly one of 'docker' or 'batch'")
        return self


class Resources(_Model):
    """Limits for one execution: CPUs, memory in MiB, GPUs."""

    cpus: float = Field(default=1.0, gt=0)
    memory: int = Field(default=512, ge=6, description="MiB")
    gpus: int = Field(default=0, ge=0)
    sharedMemory: int | None = Field(default=None, ge=1, description="MiB of /dev/shm")


class RetryPolicy(_Model):
    """How often a failed execution is retried, after how long, and for which error categories."""

    attempts: int = Field(default=0, ge=0, description="Retries after the first attempt.")
    delay: float = Field(default=0, ge=0, description="Seconds between attempts.")
    on: list[ErrorCategory] = Field(default_factory=lambda: [ErrorCategory.JOB, ErrorCategory.SYSTEM])


class ErrorSpec(_Model):
    """What an exit code means (Seed's `errors`)."""

    name: str
    category: ErrorCategory = ErrorCategory.JOB
    title: str | None = None
    description: str | None = None


class OutputFile(_Model):
    """An output the container must (or may) write, matched by a glob pattern under OUTPUT_DIR."""

    name: str
    pattern: str
    required: bool = True
    multiple: bool = False
    mediaType: str | None = None


class Outputs(_Model):
    files: list[OutputFile] = Field(default_factory=list)


class ScheduleSpec(_Model):
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


class Validator(_Model):
    """Granary's validator: the arguments' JSON Schema (draft-07 unless its `$schema` says otherwise)."""

    schema_: dict[str, Any] = Field(alias="schema")


class Registered(_Model):
    """What a task and a pipeline both are: a named, versioned flow whose arguments follow a JSON Schema."""

    name: str = Field(pattern=TASK_NAME.pattern)
    title: str | None = None
    description: str | None = None
    version: str = "1.0.0"
    validator: Validator

    @property
    def arguments_schema(self) -> dict[str, Any]:
        return self.validator.schema_

    @property
    def argument_names(self) -> list[str]:
        return list(self.arguments_schema.get("properties", {}))


class TaskDefinition(Registered):
    """A registered container algorithm. See DESIGN.md for every field."""

    runtime: Runtime
    resources: Resources = Field(default_factory=Resources)
    timeout: float | None = Field(default=None, gt=0, description="Seconds; the container is killed after it.")
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    errors: dict[int, ErrorSpec] = Field(default_factory=dict)
    outputs: Outputs = Field(default_factory=Outputs)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    seed: SeedInterface | None = Field(default=None, description="Seed's execution semantics, for Seed tasks.")
    source: str | None = Field(default=None, exclude=True, description="The file it was read from.")

    @property
    def runtime_kind(self) -> str:
        return "docker" if self.runtime.docker else "batch"

    @property
    def image(self) -> str | None:
        return self.runtime.docker.image if self.runtime.docker else None


if TYPE_CHECKING:
    from granary_flows.pipeline import PipelineDefinition

Definition = Union[TaskDefinition, "PipelineDefinition"]


def from_granary_document(document: dict[str, Any]) -> dict[str, Any]:
    """Turn a Granary task document (`POST /api/tasks` body) into our definition's shape.

    Example:
        >>> from_granary_document({"name": "ndvi", "validator": {"schema": {}}, "jobDefinition": "ndvi:3",
        ...     "jobQueue": "q"})["runtime"]
        {'batch': {'jobDefinition': 'ndvi:3', 'jobQueue': 'q'}}
    """
    converted = {key: value for key, value in document.items() if key not in ("jobDefinition", "jobQueue")}
    converted["runtime"] = {"batch": {"jobDefinition": document["jobDefinition"], "jobQueue": document["jobQueue"]}}
    return converted


def is_granary_document(document: dict[str, Any]) -> bool:
    return "jobDefinition" in document and "runtime" not in document


def is_seed_deployment(document: dict[str, Any]) -> bool:
    """A task file that deploys a Seed manifest: `seed: {manifest, image, mounts, settings, secrets}`."""
    return set(document) == {"seed"} and isinstance(document["seed"], dict) and "manifest" in document["seed"]


def _seed_manifest(deployment: dict[str, Any], path: Path, root: yaml.Node | None) -> Any:
    manifest = deployment["manifest"]
    if not isinstance(manifest, str):
        return parse_manifest(manifest, str(path), root, within=("seed", "manifest"))
    manifest_path = path.parent / manifest
    try:
        document = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise DefinitionError(str(path), [f"seed.manifest: cannot read {manifest_path}: {err}"]) from err
    return parse_manifest(document, str(manifest_path))


def load_definition(path: str | Path) -> Definition:
    """Read and check one task or pipeline file (a pipeline's steps are checked by `load_definitions`).

    Args:
        path: a `.yaml`, `.yml` or `.json` task definition or Granary task document.

    Returns:
        The checked definition, its argument schema proven a valid JSON Schema of its own draft.

    Raises:
        DefinitionError: naming the file and each field (with its line) at fault.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DefinitionError(str(path), [f"cannot read: {err.strerror}"]) from err
    try:
        root = yaml.compose(text, Loader=_Loader)
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise DefinitionError(str(path), [f"line {line}: {err.problem}"]) from err
    if not isinstance(document, dict):
        raise DefinitionError(str(path), ["the file must hold a mapping (a task definition)"])
    model: type[Definition] = TaskDefinition
    if document.get("kind") == "pipeline":
        from granary_flows.pipeline import PipelineDefinition

        model = PipelineDefinition
    elif is_granary_document(document):
        document = from_granary_document(document)
    elif is_manifest(document):
        document = task_document(parse_manifest(document, str(path), root))
    elif is_seed_deployment(document):
        deployment = document["seed"]
        mounts = {
            name: str((path.parent / source).resolve()) if source else source
            for name, source in (deployment.get("mounts") or {}).items()
        }
        document = task_document(_seed_manifest(deployment, path, root), deployment | {"mounts": mounts})
    try:
        definition = model.model_validate(document | {"source": str(path)})
    except ValidationError as err:
        raise DefinitionError(str(path), describe(err, root)) from err
    problems = [at(location, message, root) for location, message in schema_problems(definition.arguments_schema)]
    problems += [at(location, message, root) for location, message in schedule_problems(definition)]
    if problems:
        raise DefinitionError(str(path), problems)
    return definition


def schema_problems(schema: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """What keeps `schema` from being a task's argument schema: invalid for its draft, or not flat named properties."""
    base = ("validator", "schema")
    try:
        validator_for(schema, default=validator_for({"$schema": DRAFT_07})).check_schema(schema)
    except SchemaError as err:
        return [(base + tuple(err.absolute_path), f"not a valid JSON Schema: {err.message}")]
    if schema.get("type") != "object":
        return [((*base, "type"), "the argument schema must have type 'object' (one property per argument)")]
    problems = []
    for name in schema.get("properties", {}):
        if not name.isidentifier() or keyword.iskeyword(name):
            problems.append(
                ((*base, "properties", name), f"argument name {name!r} must be a letter or _ then letters, digits, _")
            )
    return problems


def schedule_problems(definition: Definition) -> list[tuple[tuple[Any, ...], str]]:
    """Each schedule's parameters, checked against the task's own schema."""
    from granary_flows.validation import violations

    problems = []
    for index, schedule in enumerate(definition.schedules):
        for violation in violations(definition.arguments_schema, schedule.parameters):
            problems.append((("schedules", index, "parameters"), violation))
    return problems


def load_definitions(paths: list[Path]) -> tuple[list[Definition], list[DefinitionError]]:
    """Read every task and pipeline file under `paths` (files or folders); broken ones are returned beside the good
    ones. A pipeline is checked against the tasks found with it."""
    definitions: list[Definition] = []
    errors: list[DefinitionError] = []
    names: dict[str, str] = {}
    for path in definition_files(paths):
        try:
            definition = load_definition(path)
        except DefinitionError as err:
            errors.append(err)
            continue
        if definition.name in names:
            errors.append(
                DefinitionError(str(path), [f"name: {definition.name!r} is also defined in {names[definition.name]}"])
            )
            continue
        names[definition.name] = str(path)
        definitions.append(definition)
    tasks = {d.name: d for d in definitions if isinstance(d, TaskDefinition)}
    broken = [error for d in definitions if (error := _linked(d, tasks)) is not None]
    errors += broken
    return [d for d in definitions if d.source not in {error.path for error in broken}], errors


def _linked(definition: Definition, tasks: dict[str, TaskDefinition]) -> DefinitionError | None:
    """A pipeline with its steps' tasks attached, or what keeps it from running, each problem with its line."""
    if isinstance(definition, TaskDefinition):
        return None
    from granary_flows.pipeline import pipeline_problems

    found = pipeline_problems(definition, tasks)
    if not found:
        return None
    root = yaml.compose(Path(definition.source or "").read_text(), Loader=_Loader) if definition.source else None
    return DefinitionError(definition.source or definition.name, [at(where, message, root) for where, message in found])


def definition_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in DEFINITION_SUFFIXES and p.is_file())
        else:
            files.append(path)
    return files


def find_definition(name: str, paths: list[Path]) -> Definition:
    """The task or pipeline called `name` among `paths`.

    Raises:
        UnknownTask: listing the tasks there are.
        DefinitionError: when that task's own file is broken.
    """
    definitions, errors = load_definitions(paths)
    for definition in definitions:
        if definition.name == name:
            return definition
    for error in errors:
        if Path(error.path).stem == name:
            raise error
    known = ", ".join(sorted(d.name for d in definitions)) or "none"
    raise UnknownTask(f"no task named {name!r} (known tasks: {known})")
