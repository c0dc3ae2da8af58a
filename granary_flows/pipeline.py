"""Pipeline definitions: files under `deployments/` with `kind: pipeline`, several tasks wired by `${...}` references.

```yaml
kind: pipeline
name: ndvi-tiles
validator: {schema: {type: object, required: [tiles], properties: {tiles: {type: array, items: {format: uri}}}}}
concurrency: 4                      # steps (and items of a mapped step) running at once
steps:
  - name: ndvi
    task: ndvi
    map: ${args.tiles}              # one container per item; ${item} and ${index} in its arguments
    arguments: {redBand: 3, nirBand: 4, tiffLocation: "${item}"}
  - name: stats
    task: raster-stats
    when: ${args.statistics} == true
    arguments: {rasters: "${steps.ndvi.results.ndvi.href}"}
```
References define the order: a step starts once the steps it refers to have finished, and may only refer to steps
listed before it. Everything that can be known before a run is checked when the file is read (`pipeline_problems`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr

from granary_flows.definition import Model, Registered, RuntimeKind, TaskDefinition
from granary_flows.errors import ReferenceProblem
from granary_flows.references import Reference, condition_references, references_in, whole_reference
from granary_flows.validation import schema_validator

STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# JSON Schema types a value of one type can be accepted as.
_ACCEPTED_AS = {"integer": {"integer", "number"}}


class Step(Model):
    """One task run by a pipeline, with arguments that may refer to the pipeline's arguments and earlier steps."""

    name: str = Field(pattern=STEP_NAME.pattern, description="Names the step's Prefect task run and its references.")
    task: str = Field(description="A registered task.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    map: str | None = Field(default=None, description="A reference to a list: one execution per item.")
    when: str | bool | None = Field(default=None, description="A condition; the step is skipped when it is false.")
    keep: bool | None = Field(
        default=None, description="Keep its outputs on `granary cleanup`; by default only final steps' are kept."
    )


class PipelineDefinition(Registered):
    """A registered pipeline: an argument schema and steps. It becomes a flow and a deployment like a task."""

    kind: Literal["pipeline"]
    steps: list[Step] = Field(min_length=1)
    concurrency: int = Field(default=4, ge=1, le=64, description="Steps, or items of a mapped step, running at once.")
    _tasks: dict[str, TaskDefinition] = PrivateAttr(default_factory=dict)

    @property
    def runtime_kind(self) -> RuntimeKind:
        return RuntimeKind.PIPELINE

    @property
    def runtime_kinds(self) -> set[RuntimeKind]:
        return {self.task_of(step).runtime_kind for step in self.steps}

    def task_of(self, step: Step) -> TaskDefinition:
        return self._tasks[step.task]

    def link(self, tasks: dict[str, TaskDefinition]) -> None:
        """Attach the task definitions its steps run."""
        self._tasks = {step.task: tasks[step.task] for step in self.steps if step.task in tasks}

    def dependencies(self, step: Step) -> list[str]:
        """The steps `step` refers to, in the order they are listed."""
        named = {ref.step for ref in step_references(step) if ref.step}
        return [other.name for other in self.steps if other.name in named]

    def is_final(self, step: Step) -> bool:
        """No other step uses its results: what it produced is what the pipeline produced."""
        return not any(step.name in self.dependencies(other) for other in self.steps)


def is_pipeline_document(document: dict[str, Any]) -> bool:
    return document.get("kind") == "pipeline"


def step_references(step: Step) -> list[Reference]:
    references = references_in(step.arguments) + (references_in(step.map) if step.map else [])
    if step.when is not None:
        references += condition_references(step.when)
    return references


Problems = list[tuple[tuple[Any, ...], str]]  # (where in the file, what is wrong)


def pipeline_problems(pipeline: PipelineDefinition, tasks: dict[str, TaskDefinition]) -> Problems:
    """What would make the pipeline fail before any step could run, each with the field at fault.

    Unknown tasks, references to steps that do not exist, come later or form a cycle, `${item}` outside a mapped
    step, pipeline arguments that are not declared, and step arguments that cannot satisfy the step task's schema.
    """
    pipeline.link(tasks)
    problems: list[tuple[tuple[Any, ...], str]] = []
    position = {step.name: index for index, step in enumerate(pipeline.steps)}
    for index, step in enumerate(pipeline.steps):
        where = ("steps", index)
        if position[step.name] != index:
            problems.append(((*where, "name"), f"step name {step.name!r} is used twice"))
        task = tasks.get(step.task)
        if task is None:
            known = ", ".join(sorted(tasks)) or "none"
            problems.append(((*where, "task"), f"unknown task {step.task!r} (known tasks: {known})"))
        problems += _reference_problems(pipeline, step, index, position)
        if task is not None:
            argument_problems = _argument_problems(pipeline, step, task)
            problems += [((*where, *location), message) for location, message in argument_problems]
    return problems


def _reference_problems(
    pipeline: PipelineDefinition, step: Step, index: int, position: dict[str, int]
) -> list[tuple[tuple[Any, ...], str]]:
    problems: list[tuple[tuple[Any, ...], str]] = []
    fields: list[tuple[tuple[Any, ...], Any]] = [(("arguments", name), value) for name, value in step.arguments.items()]
    if step.map is not None:
        fields.append((("map",), step.map))
    if step.when is not None:
        fields.append((("when",), step.when))
    declared = pipeline.arguments_schema.get("properties", {})
    for location, value in fields:
        where = ("steps", index, *location)
        try:
            references = condition_references(value) if location == ("when",) else references_in(value)
        except ReferenceProblem as err:
            problems.append((where, str(err)))
            continue
        for reference in references:
            problem = _reference_problem(pipeline, step, index, position, reference, declared)
            if problem:
                problems.append((where, problem))
    if step.map is not None:
        if whole_reference(step.map) is None:
            problems.append((("steps", index, "map"), "map takes one reference to a list, e.g. ${args.tiles}"))
        else:
            mapped = whole_reference(step.map)
            spec = declared.get(mapped.argument) if mapped and mapped.argument and len(mapped.path) == 2 else None
            if isinstance(spec, dict) and "type" in spec and "array" not in _types(spec):
                problems.append((("steps", index, "map"), f"{mapped}: the argument is {_a(spec['type'])}, not a list"))
    return problems


def _reference_problem(
    pipeline: PipelineDefinition,
    step: Step,
    index: int,
    position: dict[str, int],
    reference: Reference,
    declared: dict[str, Any],
) -> str | None:
    if reference.argument is not None and reference.argument not in declared:
        return f"{reference}: the pipeline has no argument {reference.argument!r}"
    if reference.root in ("item", "index") and step.map is None:
        return f"{reference}: only a step with `map` has an item"
    if reference.step is None:
        return None
    if reference.step not in position:
        return f"{reference}: there is no step {reference.step!r}"
    if reference.step == step.name:
        return f"{reference}: a step cannot use its own results (a cycle)"
    if position[reference.step] > index:
        cycle = _cycle(pipeline, reference.step, step.name)
        if cycle:
            return f"{reference}: the steps form a cycle: {' -> '.join([step.name, *cycle])}"
        return f"{reference}: step {reference.step!r} comes later; a step can only use the results of steps before it"
    return _output_problem(pipeline, reference)


def _cycle(pipeline: PipelineDefinition, start: str, goal: str) -> list[str] | None:
    """The chain of references from step `start` back to `goal`, if there is one."""
    steps = {step.name: step for step in pipeline.steps}
    seen: set[str] = set()

    def walk(name: str) -> list[str] | None:
        if name == goal:
            return [name]
        if name in seen or name not in steps:
            return None
        seen.add(name)
        for reference in _safe_references(steps[name]):
            if reference.step:
                rest = walk(reference.step)
                if rest:
                    return [name, *rest]
        return None

    return walk(start)


def _safe_references(step: Step) -> list[Reference]:
    try:
        return step_references(step)
    except ReferenceProblem:
        return []


def _output_problem(pipeline: PipelineDefinition, reference: Reference) -> str | None:
    """`results.<name>` of a step whose task declares its outputs must name one of them."""
    rest = reference.path[2:]
    if rest and isinstance(rest[0], int):  # an item of a mapped step
        rest = rest[1:]
    if len(rest) < 2 or rest[0] != "results" or not isinstance(rest[1], str):
        return None
    source = next(step for step in pipeline.steps if step.name == reference.step)
    task = pipeline._tasks.get(source.task)
    declared = [output.name for output in task.outputs.files] if task else []
    if declared and rest[1] not in declared:
        return f"{reference}: task {source.task!r} declares no output {rest[1]!r} (it declares: {', '.join(declared)})"
    return None


def _argument_problems(
    pipeline: PipelineDefinition, step: Step, task: TaskDefinition
) -> list[tuple[tuple[Any, ...], str]]:
    """Step arguments against the step task's schema, as far as they are known before the run."""
    schema = task.arguments_schema
    properties = schema.get("properties", {})
    problems: list[tuple[tuple[Any, ...], str]] = []
    for name in step.arguments:
        if properties and name not in properties:
            problems.append((("arguments", name), f"task {task.name!r} has no argument {name!r}"))
    for name in schema.get("required", []):
        if name not in step.arguments:
            problems.append((("arguments",), f"task {task.name!r} requires argument {name!r}"))
    literals = {name: value for name, value in step.arguments.items() if not _has_reference(value)}
    unrequired = {key: value for key, value in schema.items() if key != "required"}
    for error in schema_validator(unrequired).iter_errors(literals):
        location = ("arguments", *error.absolute_path) if error.absolute_path else ("arguments",)
        problems.append((location, f"task {task.name!r}: {error.message}"))
    for name, value in step.arguments.items():
        given = _type_of(pipeline, step, value)
        wanted = _types(properties.get(name, {}))
        if given and wanted and not (_ACCEPTED_AS.get(given, {given}) & wanted):
            problems.append(
                (("arguments", name), f"gives {_a(given)} where task {task.name!r} takes {' or '.join(sorted(wanted))}")
            )
    return problems


def _has_reference(value: Any) -> bool:
    try:
        return bool(references_in(value))
    except ReferenceProblem:
        return True


def _type_of(pipeline: PipelineDefinition, step: Step, value: Any) -> str | None:
    """The JSON type a referencing value will have, where the pipeline's own schema tells."""
    if not isinstance(value, str) or not _has_reference(value):
        return None
    reference = whole_reference(value)
    if reference is None:
        return "string"  # a reference written into a longer string
    declared = pipeline.arguments_schema.get("properties", {})
    if reference.argument is not None and len(reference.path) == 2:
        return _single_type(declared.get(reference.argument, {}))
    if reference.root == "index":
        return "integer"
    if reference.root == "item" and step.map:
        mapped = whole_reference(step.map)
        spec = declared.get(mapped.argument, {}) if mapped and mapped.argument and len(mapped.path) == 2 else {}
        items = spec.get("items") if isinstance(spec, dict) else None
        return _single_type(items) if isinstance(items, dict) and len(reference.path) == 1 else None
    if reference.step and reference.path[-1] == "href":
        source = next((s for s in pipeline.steps if s.name == reference.step), None)
        return "array" if source is not None and source.map and not isinstance(reference.path[2], int) else "string"
    return None


def _types(spec: Any) -> set[str]:
    if not isinstance(spec, dict) or "type" not in spec:
        return set()
    declared = spec["type"]
    return set(declared) if isinstance(declared, list) else {declared}


def _single_type(spec: Any) -> str | None:
    types = _types(spec)
    return next(iter(types)) if len(types) == 1 else None


def _a(kind: Any) -> str:
    return f"{'an' if str(kind)[:1] in 'aeiou' else 'a'} {kind}"
