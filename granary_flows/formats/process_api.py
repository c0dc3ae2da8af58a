"""process-api / SEPEX plugin files (Dewberry's OGC API - Processes servers), accepted unmodified as task files.

```yaml
info: {id: pyecho, version: '8.15.2023', title: Echo Demo, description: ..., jobControlOptions: [sync-execute]}
host: {type: local}                       # or aws-batch, with jobDefinition and jobQueue
container: {image: pyecho:latest, command: [python, main.py], maxResources: {cpus: 0.1, memory: 256}}
inputs:
  - {id: text, title: text, input: {literalDataDomain: {dataType: value}}, minOccurs: 1, maxOccurs: 1}
outputs:
  - {id: message, title: message, output: {transmissionMode: [value]}}
```
Their containers take the JSON of the inputs as the last argument of the command, and report results on their last
stdout line (`{"plugin_results": ...}`). Inputs in OGC process-description form become the task's JSON Schema:
`minOccurs` 0 makes an input optional, `maxOccurs` above 1 makes it a list, `literalDataDomain.dataType` gives its type.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DATA_TYPES = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "int": {"type": "integer"},
    "double": {"type": "number"},
    "float": {"type": "number"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "uri": {"type": "string", "format": "uri"},
    "url": {"type": "string", "format": "uri"},
    "value": {},  # any JSON value
}


class _Plugin(BaseModel):
    model_config = ConfigDict(extra="allow")  # plugin files carry comments and vendor fields: keep them


class Info(_Plugin):
    id: str = Field(min_length=1)
    version: str = "1.0.0"
    title: str | None = None
    description: str | None = None
    jobControlOptions: list[Literal["sync-execute", "async-execute", "dismiss"]] | None = None
    outputTransmission: list[Literal["value", "reference"]] | None = None


class Host(_Plugin):
    type: Literal["local", "aws-batch"]
    jobDefinition: str | None = None
    jobQueue: str | None = None


class MaxResources(_Plugin):
    cpus: float | None = None
    memory: int | None = None


class Container(_Plugin):
    image: str | None = None
    command: list[str] | None = None
    maxResources: MaxResources | None = None
    envVars: list[str] | None = None


class LiteralDataDomain(_Plugin):
    dataType: str | dict[str, Any] = "value"
    valueDefinition: Any = None
    defaultValue: Any = None


class InputForm(_Plugin):
    literalDataDomain: LiteralDataDomain | None = None
    formats: list[dict[str, Any]] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class Input(_Plugin):
    id: str = Field(min_length=1)
    title: str | None = None
    description: str | None = None
    input: InputForm | None = None
    minOccurs: int = Field(default=1, ge=0)
    maxOccurs: int | Literal["unbounded"] = 1


class Output(_Plugin):
    id: str = Field(min_length=1)
    title: str | None = None
    description: str | None = None
    inputId: str | None = None


class Plugin(_Plugin):
    """A process-api / SEPEX plugin file, checked field by field."""

    info: Info
    host: Host
    container: Container
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None


def is_plugin(document: dict[str, Any]) -> bool:
    return "info" in document and ("container" in document or "host" in document)


def task_document(plugin: Plugin) -> dict[str, Any]:
    """Our task file's shape for a checked plugin.

    Raises:
        ValueError: with the field at fault as `(location, message)`, e.g. a local host with no image.
    """
    required, properties = [], {}
    for entry in plugin.inputs or []:
        properties[entry.id] = _schema(entry)
        if entry.minOccurs > 0:
            required.append(entry.id)
    container = plugin.container
    resources: dict[str, Any] = {}
    if container.maxResources and container.maxResources.cpus:
        resources["cpus"] = container.maxResources.cpus
    if container.maxResources and container.maxResources.memory:
        resources["memory"] = container.maxResources.memory
    if plugin.host.type == "local":
        if not container.image:
            raise PluginProblem(("container", "image"), "a plugin with host.type local needs an image")
        runtime: dict[str, Any] = {
            "docker": {
                "image": container.image,
                "command": container.command,
                "arguments": ["last-argument"],
                "passEnvironment": container.envVars or [],
            }
        }
    else:
        missing = [field for field in ("jobDefinition", "jobQueue") if not getattr(plugin.host, field)]
        if missing:
            raise PluginProblem(("host", missing[0]), f"a plugin with host.type aws-batch needs {missing[0]}")
        batch: dict[str, Any] = {"jobDefinition": plugin.host.jobDefinition, "jobQueue": plugin.host.jobQueue}
        if container.command:
            batch |= {"command": container.command, "arguments": ["environment", "last-argument"]}
        runtime = {"batch": batch}
    info = plugin.info
    options = list(info.jobControlOptions or ["sync-execute", "async-execute"])
    return {
        "name": info.id,
        "title": info.title,
        "description": info.description,
        "version": str(info.version),
        "jobControlOptions": [*options, "dismiss"] if "dismiss" not in options else options,
        "validator": {
            "schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "required": required,
                "properties": properties,
            }
        },
        "runtime": runtime,
        "resources": resources,
        "outputs": {
            "values": [
                {"name": output.id, "title": output.title, "description": output.description}
                for output in plugin.outputs or []
            ]
        },
    }


class PluginProblem(ValueError):
    """A plugin that is valid field by field but cannot run as it is."""

    def __init__(self, location: tuple[Any, ...], message: str):
        self.location = location
        super().__init__(message)


def _schema(entry: Input) -> dict[str, Any]:
    form = entry.input or InputForm()
    if form.schema_ is not None:
        single = dict(form.schema_)
    else:
        domain = form.literalDataDomain or LiteralDataDomain()
        data_type = domain.dataType if isinstance(domain.dataType, str) else str(domain.dataType.get("name", "value"))
        single = dict(DATA_TYPES.get(data_type.lower(), {}))
        if domain.defaultValue is not None:
            single["default"] = domain.defaultValue
        media_types = [f.get("mediaType") for f in form.formats or [] if isinstance(f, dict) and f.get("mediaType")]
        if media_types:
            single["contentMediaType"] = media_types[0]
    described = {key: value for key, value in (("title", entry.title), ("description", entry.description)) if value}
    if isinstance(entry.maxOccurs, str) or entry.maxOccurs > 1:
        many: dict[str, Any] = {"type": "array", "items": single, "minItems": max(entry.minOccurs, 1)}
        if not isinstance(entry.maxOccurs, str):
            many["maxItems"] = entry.maxOccurs
        return many | described
    return single | described
