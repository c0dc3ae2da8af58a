"""Reading task and pipeline definitions, in every format a user brings, into checked models.

A definition is our task file, a pipeline file (`kind: pipeline`), a Granary task document, a Seed manifest (or a
task file deploying one), or a process-api / SEPEX plugin file. It comes from a file under `deployments/` or, through
the HTTP API, from a request body: both go through `read_definition`. Every problem is named with the field and, where
the text has one, the line; nothing is registered or run from a definition that has one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from granary_flows.definition import TaskDefinition
from granary_flows.errors import DefinitionError, UnknownTask
from granary_flows.formats import granary, process_api
from granary_flows.formats import seed as seed_format
from granary_flows.locations import at, describe
from granary_flows.pipeline import PipelineDefinition, is_pipeline_document, pipeline_problems
from granary_flows.validation import schema_problems, unstorable_at, violations
from granary_flows.words import SpecWord

Definition = TaskDefinition | PipelineDefinition
DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")  # seed.manifest.json included
MAX_NODES = 100_000  # values a definition may expand to: a YAML alias bomb is refused, not expanded


class SourceFormat(SpecWord):
    """The format a definition was written in."""

    TASK = "granary-flows"
    PIPELINE = "pipeline"
    GRANARY = "granary"
    SEED = "seed"
    PROCESS_API = "process-api"


class LoadedDefinition(BaseModel):
    """A checked definition, the format it came in and the document as it was given (kept in the registry)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    definition: Any  # TaskDefinition | PipelineDefinition
    source_format: SourceFormat
    document: dict[str, Any]
    source: str
    text: str = ""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false, so that `retries.on` stays a key, not the boolean True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_text(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document a YAML or JSON text holds, and its node tree (for line numbers).

    Raises:
        DefinitionError: naming the line of a syntax error, or a text that expands to too many values.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
        if root is not None and _expanded_size(root, {}) > MAX_NODES:
            raise DefinitionError(source, [f"the document expands to more than {MAX_NODES:,} values (YAML aliases)"])
        repeated = _repeated_keys(root, set()) if root is not None else []
        if repeated:
            raise DefinitionError(source, repeated)
        return yaml.load(text, Loader=_Loader), root
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise DefinitionError(source, [f"line {line}: {err.problem}"]) from err
    except RecursionError as err:
        raise DefinitionError(source, [f"the document nests too deeply; at most {MAX_DEPTH} levels are read"]) from err


def refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`'s `object_pairs_hook` that refuses a key given twice in one object, naming it.

    Example:
        >>> json.loads('{"a": 1, "a": 2}', object_pairs_hook=refuse_repeated_keys)
        Traceback (most recent call last):
        ValueError: the key 'a' is given twice in one object
    """
    document = dict(pairs)
    if len(document) < len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ValueError(f"the key {repeated!r} is given twice in one object")
    return document


def _repeated_keys(node: yaml.Node, seen: set[int]) -> list[str]:
    """Every key given twice in one mapping, with its line: YAML and JSON parsers keep the last one silently, and a
    setting given twice is a mistake to say, not to guess at."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    problems: list[str] = []
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in keys:
                    problems.append(f"line {key.start_mark.line + 1}: the key {key.value!r} is given twice")
                keys.add(key.value)
            problems += _repeated_keys(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _repeated_keys(item, seen)
    return problems


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values the node stands for once its aliases are expanded, without expanding them."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_NODES + 1  # a node that contains itself expands without end
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_NODES + 1)
    return sizes[id(node)]


def read_definition(text: str, source: str, folder: Path | None = None) -> LoadedDefinition:
    """Read and check one definition from its text, whatever its format.

    A pipeline's steps are checked against tasks by `check_pipeline` (they may be registered with it).

    Args:
        text: YAML or JSON.
        source: where it came from (a file path, or `request` for an HTTP body), for error messages.
        folder: where relative paths in it point (a Seed deployment's mounts and manifest); None refuses them.

    Raises:
        DefinitionError: naming the source and each field (with its line) at fault.
    """
    document, root = parse_text(text, source)
    if not isinstance(document, dict):
        raise DefinitionError(source, ["the document must be a mapping (a task definition)"])
    deepest = _depth(document)
    if deepest > MAX_DEPTH:
        raise DefinitionError(source, [f"the document nests {deepest} levels deep; at most {MAX_DEPTH} are read"])
    unstorable = [at(location, problem, root) for location, problem in unstorable_at(document)]
    if unstorable:
        raise DefinitionError(source, unstorable)
    source_format, converted = _converted(document, source, root, folder)
    model: type[Definition] = PipelineDefinition if source_format is SourceFormat.PIPELINE else TaskDefinition
    within = ("seed", "manifest") if "seed" in document and source_format is SourceFormat.SEED else ()
    try:
        definition = model.model_validate(converted | {"source": source})
    except ValidationError as err:
        lines = root if source_format in (SourceFormat.TASK, SourceFormat.PIPELINE, SourceFormat.GRANARY) else None
        raise DefinitionError(source, describe(err, lines, within if lines else ())) from err
    problems = [at(location, message, root) for location, message in schema_problems(definition.arguments_schema)]
    problems += [at(location, message, root) for location, message in _schedule_problems(definition)]
    if problems:
        raise DefinitionError(source, problems)
    return LoadedDefinition(
        definition=definition, source_format=source_format, document=document, source=source, text=text
    )


MAX_DEPTH = 64  # levels of nesting a definition may have: real schemas use a dozen, and every walk stays far from
# Python's recursion limit


def _depth(value: Any, stop: int = MAX_DEPTH + 1) -> int:
    """How deep a document nests (counted up to `stop`), without recursion."""
    deepest = 0
    pending = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth >= stop:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _converted(
    document: dict[str, Any], source: str, root: yaml.Node | None, folder: Path | None
) -> tuple[SourceFormat, dict[str, Any]]:
    """The format of a document and the document in our task file's shape."""
    if is_pipeline_document(document):
        return SourceFormat.PIPELINE, document
    if granary.is_granary_document(document):
        return SourceFormat.GRANARY, granary.task_document(document)
    if seed_format.is_manifest(document):
        return SourceFormat.SEED, seed_format.task_document(seed_format.parse_manifest(document, source, root))
    if seed_format.is_seed_deployment(document):
        deployment = document["seed"]
        manifest = _seed_manifest(deployment, source, root, folder)
        mounts = {
            name: _local_path(value, folder, source, ("seed", "mounts", name)) if value else value
            for name, value in (deployment.get("mounts") or {}).items()
        }
        return SourceFormat.SEED, seed_format.task_document(manifest, deployment | {"mounts": mounts})
    if process_api.is_plugin(document):
        return SourceFormat.PROCESS_API, _plugin_document(document, source, root)
    return SourceFormat.TASK, document


def _plugin_document(document: dict[str, Any], source: str, root: yaml.Node | None) -> dict[str, Any]:
    try:
        plugin = process_api.Plugin.model_validate(document)
        return process_api.task_document(plugin)
    except ValidationError as err:
        raise DefinitionError(source, describe(err, root)) from err
    except process_api.PluginProblem as err:
        raise DefinitionError(source, [at(err.location, str(err), root)]) from err


def _seed_manifest(deployment: dict[str, Any], source: str, root: yaml.Node | None, folder: Path | None) -> Any:
    manifest = deployment["manifest"]
    if not isinstance(manifest, str):
        return seed_format.parse_manifest(manifest, source, root, within=("seed", "manifest"))
    path = Path(_local_path(manifest, folder, source, ("seed", "manifest")))
    try:
        document = json.loads(_read_manifest(path, source), object_pairs_hook=refuse_repeated_keys)
    except ValueError as err:
        raise DefinitionError(source, [f"seed.manifest: cannot read {path}: {err}"]) from err
    return seed_format.parse_manifest(document, str(path))


def _read_manifest(path: Path, source: str) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise DefinitionError(source, [f"seed.manifest: cannot read {path}: {err}"]) from err


def _local_path(value: Any, folder: Path | None, source: str, location: tuple[Any, ...]) -> str:
    if folder is None:
        field = ".".join(map(str, location))
        raise DefinitionError(source, [f"{field}: a host path can only be given in a task file, not through the API"])
    return str((folder / str(value)).resolve())


def _schedule_problems(definition: Definition) -> list[tuple[tuple[Any, ...], str]]:
    """Each schedule's parameters, checked against the task's own schema."""
    problems = []
    for index, schedule in enumerate(definition.schedules):
        for violation in violations(definition.arguments_schema, schedule.parameters):
            problems.append((("schedules", index, "parameters"), violation))
    return problems


def load_definition(path: str | Path) -> Definition:
    """Read and check one task or pipeline file (a pipeline's steps are checked by `load_definitions`).

    Args:
        path: a `.yaml`, `.yml` or `.json` definition in any of the formats above.

    Returns:
        The checked definition, its argument schema proven a valid JSON Schema of its own draft.

    Raises:
        DefinitionError: naming the file and each field (with its line) at fault.

    Example:
        >>> load_definition("deployments/ndvi.yaml").runtime.docker.image
        'granary/ndvi:1'
    """
    return read_file(Path(path)).definition


def read_file(path: Path) -> LoadedDefinition:
    """`read_definition` for a file: relative paths in it point next to it."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DefinitionError(str(path), [f"cannot read: {getattr(err, 'strerror', None) or err}"]) from err
    return read_definition(text, str(path), path.parent)


def load_definitions(paths: list[Path]) -> tuple[list[Definition], list[DefinitionError]]:
    """Every definition under `paths` (files or folders), checked; broken ones are returned beside the good ones."""
    loaded, errors = read_files(paths)
    return [entry.definition for entry in loaded], errors


def read_files(
    paths: list[Path], registered: dict[str, TaskDefinition] | None = None
) -> tuple[list[LoadedDefinition], list[DefinitionError]]:
    """Read every definition under `paths`; two that would have one name, and pipelines whose steps cannot run
    (against the tasks found with them and the `registered` ones), are errors naming both files."""
    loaded: list[LoadedDefinition] = []
    errors: list[DefinitionError] = []
    names: dict[str, str] = {}
    for path in definition_files(paths):
        try:
            entry = read_file(path)
        except DefinitionError as err:
            errors.append(err)
            continue
        key = registry_key(entry.definition.name)
        if key in names:
            errors.append(
                DefinitionError(str(path), [f"name: {entry.definition.name!r} is also the name in {names[key]}"])
            )
            continue
        names[key] = str(path)
        loaded.append(entry)
    tasks = dict(registered or {}) | {e.definition.name: e.definition for e in loaded if _is_task(e.definition)}
    broken = {error.path: error for e in loaded if (error := check_pipeline(e, tasks)) is not None}
    return [e for e in loaded if e.source not in broken], errors + list(broken.values())


def check_pipeline(entry: LoadedDefinition, tasks: dict[str, TaskDefinition]) -> DefinitionError | None:
    """What keeps a pipeline from running with these tasks, each problem with its line; None for tasks."""
    definition = entry.definition
    if _is_task(definition):
        return None
    found = pipeline_problems(definition, tasks)
    if not found:
        return None
    _, root = parse_text(entry.text, entry.source) if entry.text else (None, None)
    return DefinitionError(entry.source, [at(where, message, root) for where, message in found])


def registry_key(name: str) -> str:
    """Names that differ only by case, `_` or `-` are one task: Prefect's block names are lower-case with dashes."""
    return name.lower().replace("_", "-")


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


def _is_task(definition: Any) -> bool:
    return isinstance(definition, TaskDefinition)
