"""Argument validation with the task's own JSON Schema draft, reporting every violation with its JSON path.

Prefect's server checks parameters too, but always with Draft 2020-12 and without `format: uri`; this check is the
one that counts, and it runs before any container or job exists.
"""

from __future__ import annotations

from typing import Any

from jsonschema.validators import validator_for

from granary_flows.errors import ArgumentsInvalid

DRAFT_07 = {"$schema": "http://json-schema.org/draft-07/schema#"}


def violations(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """Every way `arguments` break `schema`, as `$.path: message`, in document order.

    Example:
        >>> violations({"type": "object", "required": ["a"]}, {})
        ["$: 'a' is a required property"]
    """
    cls = validator_for(schema, default=validator_for(DRAFT_07))
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{error.json_path}: {error.message}" for error in errors]


def prepare_arguments(task: str, schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The document a container receives: empty (null) arguments dropped, top-level defaults filled in.

    Prefect passes `None` for an argument nobody gave (the flow's signature default), and its UI sends `null` for an
    empty field: both mean "not given", unless the argument's schema accepts null.

    Args:
        task: the task's name, for the error message.
        schema: the task's argument schema.
        arguments: as given by a user, a schedule or Prefect's run form (which sends `null` for empty fields).

    Returns:
        The validated arguments, a new dict.

    Raises:
        ArgumentsInvalid: listing every violation.
    """
    properties = schema.get("properties", {})
    document = {
        name: value for name, value in arguments.items() if value is not None or _accepts_null(properties.get(name))
    }
    for name, spec in properties.items():
        if name not in document and isinstance(spec, dict) and "default" in spec:
            document[name] = spec["default"]
    found = violations(schema, document)
    if found:
        raise ArgumentsInvalid(task, found)
    return document


def _accepts_null(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    kind = spec.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)
