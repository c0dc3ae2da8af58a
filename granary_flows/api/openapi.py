"""The API's OpenAPI document in version 3.0 (OGC's oas30 conformance class): FastAPI writes 3.1, whose JSON Schema
3.0 readers refuse (`type: "null"`, `examples` lists, `const`), so its document is rewritten in 3.0's words."""

from __future__ import annotations

from typing import Any

EXTENSIONS_NOTE = (
    "OGC API - Processes - Part 1: Core 1.0, Part 2 (deploy, replace, undeploy) and Granary's REST API. "
    "Outside the standard, said so: /jobs/{jobId}/logs, /jobs/{jobId}/metadata, /jobs/{jobId}/outputs/{path} and the "
    "statusInfo fields `submitter` and `stacItem`."
)


def openapi30(document: dict[str, Any]) -> dict[str, Any]:
    """A 3.1 document (as FastAPI writes it) in OpenAPI 3.0.3's words; the input is not changed.

    Example:
        >>> openapi30({"openapi": "3.1.0", "paths": {}, "components": {"schemas": {"A": {"anyOf": [
        ...     {"type": "string"}, {"type": "null"}]}}}})["components"]["schemas"]["A"]
        {'type': 'string', 'nullable': True}
    """
    converted = _schema(document)
    converted["openapi"] = "3.0.3"
    info = converted.setdefault("info", {})
    info["description"] = EXTENSIONS_NOTE
    return converted


def _schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _schema(value) for key, value in node.items()}
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            node.pop(key)
            if len(rest) == 1:
                node = {**rest[0], **{k: v for k, v in node.items()}, "nullable": True}
            else:
                node[key] = rest
                node["nullable"] = True
    if isinstance(node.get("type"), list):
        declared = node.pop("type")
        types = [t for t in declared if t != "null"]
        if len(types) < len(declared):
            node["nullable"] = True
        if len(types) == 1:
            node["type"] = types[0]
        elif types:
            node["anyOf"] = [{"type": t} for t in types]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list):  # a schema's examples; a media type's are a map, and stay
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    node.pop("$schema", None)
    return node
