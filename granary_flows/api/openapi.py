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
    converted = secured(_schema(document))
    converted["openapi"] = "3.0.3"
    info = converted.setdefault("info", {})
    info["description"] = EXTENSIONS_NOTE
    return converted


# How a request says who it is (`api.identity`): a bearer token (an API token or an OIDC JWT), or the browser's
# session cookie (`api.sessions`), for this API's own pages.
SECURITY_SCHEMES = {
    "bearerToken": {"type": "http", "scheme": "bearer", "description": "An API token or an OIDC access token."},
    "signInCookie": {"type": "apiKey", "in": "cookie", "name": "granary_session",
                     "description": "A session, set by /login and ended by /logout; for this API's own pages."},
}  # fmt: skip
PUBLIC = {("/", "get"), ("/conformance", "get")}
# No identity needed where the address itself is the credential: Granary's single-use webhook, a signed file link.
OWN_CREDENTIAL = {("/api/executions/{execution_id}/results/{hook}", "post"), ("/jobs/{job_id}/outputs/{path}", "get")}


def secured(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its security schemes, required everywhere but the public routes and those whose address is
    its own credential; the input is not changed."""
    secured_document = {**document, "security": [{"bearerToken": []}, {"signInCookie": []}]}
    components = {**document.get("components", {}), "securitySchemes": SECURITY_SCHEMES}
    secured_document["components"] = components
    paths: dict[str, dict[str, Any]] = {}
    for path, operations in document.get("paths", {}).items():
        paths[path] = {}
        for method, operation in operations.items():
            if (path, method) in PUBLIC:
                operation = {**operation, "security": []}
            elif (path, method) in OWN_CREDENTIAL:
                operation = {**operation, "security": [{}, {"bearerToken": []}, {"signInCookie": []}]}
            paths[path][method] = operation
    secured_document["paths"] = paths
    return secured_document


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
