"""Process descriptions (OGC API - Processes): a registered task or pipeline as OGC clients see it.

Inputs come from the argument schema (an array argument becomes an input with `maxOccurs`, its items the schema;
`minOccurs` from `required`); outputs from the task's declared output files (by reference or value) and value outputs
(`plugin_results`, Seed's JSON outputs); with none declared, `results` (the result files) and `value`.
"""

from __future__ import annotations

import copy
from typing import Any

from granary_flows.definition import TaskDefinition
from granary_flows.loading import Definition

OGC_EXECUTE = "http://www.opengis.net/def/rel/ogc/1.0/execute"
LINK_SCHEMA = {"type": "object", "required": ["href"], "properties": {"href": {"type": "string", "format": "uri"}}}


def process_summary(definition: Definition, base: str) -> dict[str, Any]:
    """The process as `/processes` lists it."""
    return {
        "id": definition.name,
        "title": definition.title or definition.name,
        "description": definition.description or "",
        "version": definition.version,
        "keywords": list(definition.tags),
        "jobControlOptions": list(definition.jobControlOptions),
        "outputTransmission": ["value", "reference"],
        "links": [
            {"href": f"{base}/processes/{definition.name}", "rel": "self", "type": "application/json",
             "title": "process description"},
            {"href": f"{base}/processes/{definition.name}?f=html", "rel": "alternate", "type": "text/html",
             "title": "process description as HTML"},
        ],
    }  # fmt: skip


def process_description(definition: Definition, base: str) -> dict[str, Any]:
    """The process as `/processes/{id}` describes it."""
    described = process_summary(definition, base)
    described["links"].append(
        {"href": f"{base}/processes/{definition.name}/execution", "rel": OGC_EXECUTE, "title": "execute"}
    )
    described["inputs"] = inputs_of(definition.arguments_schema)
    described["outputs"] = outputs_of(definition)
    return described


def inputs_of(schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", []))
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    inputs = {}
    for name, spec in schema.get("properties", {}).items():
        spec = _inlined(spec if isinstance(spec, dict) else {}, definitions)
        described: dict[str, Any] = {
            "title": spec.get("title") or name,
            "description": spec.get("description", ""),
        }
        if spec.get("type") == "array" and isinstance(spec.get("items"), dict):
            described["schema"] = spec["items"]
            described["minOccurs"] = max(int(spec.get("minItems", 1)), 1) if name in required else 0
            described["maxOccurs"] = spec.get("maxItems", "unbounded")
        else:
            described["schema"] = {k: v for k, v in spec.items() if k not in ("title", "description")}
            described["minOccurs"] = 1 if name in required else 0
            described["maxOccurs"] = 1
        inputs[name] = described
    return inputs


def outputs_of(definition: Definition) -> dict[str, Any]:
    if not isinstance(definition, TaskDefinition):  # a pipeline: its steps and their results
        return {
            "steps": {"title": "Steps", "description": "Each step's status and results", "schema": {"type": "object"}}
        }
    outputs: dict[str, Any] = {}
    for output in definition.outputs.files:
        file_schema = {"type": "string", "format": "uri"}
        if output.mediaType:
            file_schema["contentMediaType"] = output.mediaType
        schema = {"type": "array", "items": file_schema} if output.multiple else file_schema
        outputs[output.name] = {"title": output.name, "description": "a file it writes", "schema": schema}
    for value in definition.outputs.values:
        outputs[value.name] = {
            "title": value.title or value.name,
            "description": value.description or "",
            "schema": value.schema_ or {},
        }
    if not outputs:
        outputs["results"] = {
            "title": "Results",
            "description": "The files it wrote",
            "schema": {"type": "array", "items": LINK_SCHEMA},
        }
        outputs["value"] = {"title": "Value", "description": "What it reported (plugin_results)", "schema": {}}
    return outputs


def _inlined(spec: dict[str, Any], definitions: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """A property schema with its local `$ref`s written in, so that an OGC client reads it without the root."""
    if depth > 8:
        return spec
    if "$ref" in spec and isinstance(spec["$ref"], str):
        target = spec["$ref"].rsplit("/", 1)[-1]
        if target in definitions:
            merged = {k: v for k, v in spec.items() if k != "$ref"} | copy.deepcopy(definitions[target])
            return _inlined(merged, definitions, depth + 1)
    return spec
