"""The Prefect run form for a task: its argument schema reshaped so both of Prefect's UIs render every field.

What each UI needs was measured on Prefect 3.8/3.9 (tests/test_ui.py drives both in Chromium): untitled fields are
labelled by Python type names; field order follows `position`, not key order (which PostgreSQL scrambles); the Vue
UI drops fields whose `$ref` points at `#/$defs/` and shows no input for `type: [T, "null"]`; an optional object with
required fields is pre-filled and then refused. Hence: titles everywhere, a `position` per top-level property,
`definitions` instead of `$defs`, `anyOf [X, null]` instead of `type: [X, "null"]`, `prefixItems` for tuples,
optional objects and arrays as `anyOf [X, null]` with a null default. The task's own schema, not this one, is what
arguments are validated against.
"""

from __future__ import annotations

import copy
import json
from typing import Any


def parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Prefect's `parameter_openapi_schema` for a task's argument schema; the input is not changed.

    Example:
        >>> form = parameter_schema({"type": "object", "properties": {"red_band": {"type": "integer"}}})
        >>> form["properties"]["red_band"]["title"], form["properties"]["red_band"]["position"]
        ('Red band', 0)
    """
    source = copy.deepcopy(schema)
    required = list(source.get("required", []))
    definitions = {**source.get("definitions", {}), **source.get("$defs", {})}
    properties = {}
    for position, (name, spec) in enumerate(source.get("properties", {}).items()):
        field = _field(spec if isinstance(spec, dict) else {}, name)
        if name not in required:
            field = _optional(field)
        field["position"] = position
        properties[name] = field
    form: dict[str, Any] = {"title": "Parameters", "type": "object", "properties": properties, "required": required}
    if definitions:
        form["definitions"] = {name: _field(spec, name) for name, spec in definitions.items()}
    return form


def _field(spec: dict[str, Any], name: str) -> dict[str, Any]:
    field = {key: value for key, value in spec.items() if key not in ("$schema", "$id", "$comment")}
    field.setdefault("title", title_of(name))
    if "$ref" in field:
        field["$ref"] = field["$ref"].replace("#/$defs/", "#/definitions/")
    if isinstance(field.get("type"), list) and "null" in field["type"]:
        types = [t for t in field.pop("type") if t != "null"]
        inner = _field({**field, "type": types[0] if len(types) == 1 else types}, name)
        return {"title": field["title"], "anyOf": [inner, {"type": "null"}], "default": field.get("default")}
    if "oneOf" in field and all(isinstance(o, dict) and "const" in o for o in field["oneOf"]):
        options = field.pop("oneOf")
        field["enum"] = [o["const"] for o in options]
    if "examples" in field:
        examples = ", ".join(json.dumps(e) for e in field.pop("examples"))
        field["description"] = f"{field.get('description', '').rstrip()} (e.g. {examples})".lstrip()
    if isinstance(field.get("items"), list):
        field["prefixItems"] = [_field(item, f"{name} {i + 1}") for i, item in enumerate(field.pop("items"))]
    elif isinstance(field.get("items"), dict):
        field["items"] = _field(field["items"], f"{name} item")
    if isinstance(field.get("properties"), dict):
        field["properties"] = {key: _field(value, key) for key, value in field["properties"].items()}
    return field


def _optional(field: dict[str, Any]) -> dict[str, Any]:
    """Optional objects and arrays are pre-filled (and then refused) by the UI unless offered as nullable."""
    if field.get("type") in ("object", "array") and "anyOf" not in field:
        return {"title": field["title"], "anyOf": [field, {"type": "null"}], "default": field.get("default")}
    return field


def title_of(name: str) -> str:
    """A label for an argument named without a title: words split at `_`, `-` and camelCase, in sentence case.

    Example:
        >>> title_of("redBand"), title_of("cloud_cover"), title_of("INPUT_FILE"), title_of("nir-band")
        ('Red band', 'Cloud cover', 'Input file', 'Nir band')
    """
    words = []
    for part in name.replace("-", "_").split("_"):
        current = ""
        for char in part:
            if char.isupper() and current and not current[-1].isupper():
                words.append(current)
                current = ""
            current += char
        words.append(current)
    text = " ".join(word.lower() for word in words if word)
    return text[:1].upper() + text[1:]
