"""Process descriptions (OGC API - Processes): a registered task or pipeline as OGC clients see it.

Inputs come from the argument schema (an array argument becomes an input with `maxOccurs`, its items the schema,
and its default list the input's `default`, an extension; `minOccurs` from `required`); outputs from the task's
declared output files (by reference or value) and value outputs (`plugin_results`, Seed's JSON outputs); with none
declared, `results` (the result files) and `value`.
"""

from __future__ import annotations

import copy
from typing import Any

from granary_flows.definition import TaskDefinition
from granary_flows.loading import Definition

OGC_EXECUTE = "http://www.opengis.net/def/rel/ogc/1.0/execute"
# What an OGC process description's `schema` may hold: OpenAPI 3.0's Schema Object (OGC's schema.yaml).
SCHEMA_KEYS = {
    "title",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "type",
    "not",
    "allOf",
    "oneOf",
    "anyOf",
    "items",
    "properties",
    "additionalProperties",
    "description",
    "format",
    "default",
    "nullable",
    "readOnly",
    "writeOnly",
    "example",
    "deprecated",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
    "$ref",
}
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
            described["schema"] = ogc_schema(_inlined(spec["items"], definitions))
            described["minOccurs"] = max(int(spec.get("minItems", 1)), 1) if name in required else 0
            described["maxOccurs"] = spec.get("maxItems", "unbounded")
            if "default" in spec:  # the list's default, which the schema of its items cannot say
                described["default"] = spec["default"]
        else:
            described["schema"] = ogc_schema({k: v for k, v in spec.items() if k not in ("title", "description")})
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
    for value in definition.value_outputs:
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


def ogc_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema in the words OGC's process descriptions use (OpenAPI 3.0's Schema Object): `type` lists and
    numeric exclusive bounds rewritten, annotations it has no word for (`$id`, `examples`, ...) left out.

    Example:
        >>> ogc_schema({"$id": "#/properties/foo", "type": ["integer", "null"], "exclusiveMinimum": 0, "examples": [3]})
        {'nullable': True, 'type': 'integer', 'example': 3, 'minimum': 0, 'exclusiveMinimum': True}
    """
    from granary_flows.api.openapi import _schema

    return _kept(_schema(spec))


def _kept(node: Any) -> Any:
    if isinstance(node, list):
        return [_kept(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            kept[key] = {name: _kept(sub) for name, sub in value.items()}
        elif key in ("default", "example", "enum"):
            kept[key] = value  # data, not schema
        elif key == "required" and not value:
            continue
        else:
            kept[key] = _kept(value)
    return kept


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
