"""Argument validation with the task's own JSON Schema draft, reporting every violation with its JSON path.

Prefect's server checks parameters too, but always with Draft 2020-12 and without `format: uri`; this check is the
one that counts, and it runs before any container or job exists. It is safe on any schema a user registers:

- `pattern` and `patternProperties` are matched by RE2, in time linear in the input: no pattern can stall a runner.
  A pattern RE2 cannot read (back-references, look-arounds) is refused when the task is registered.
- `$ref`s resolve inside the task's own schema; nothing is ever fetched. A reference to anything else is refused when
  the task is registered, naming it.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2
from jsonschema import ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT7, specification_with

from granary_flows.contract import RESERVED_VARIABLES, variable_name
from granary_flows.errors import ArgumentsInvalid

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
INT64 = 2**63 - 1  # what Prefect's server (and most JSON readers) can hold; a larger number wedges its API


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False
    return options


RE2_OPTIONS = _re2_options()


@lru_cache(maxsize=4096)
def compiled_pattern(pattern: str) -> Any:
    """The RE2 program for a schema pattern (ECMA-262 as RE2 reads it).

    Raises:
        re2.error: when RE2 cannot read it: it has a back-reference or a look-around.
    """
    return re2.compile(pattern, RE2_OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = compiled_pattern(pattern).search(instance)
    except re2.error:
        yield ValidationError(f"the schema's pattern {pattern!r} cannot be evaluated in linear time")
        return
    if matched is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        try:
            program = compiled_pattern(pattern)
        except re2.error:
            yield ValidationError(f"the schema's pattern {pattern!r} cannot be evaluated in linear time")
            continue
        for name, value in instance.items():
            if program.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _refuse_retrieval(uri: str) -> Resource[Any]:
    # jsonschema would otherwise fetch a `$ref` it cannot resolve locally (its deprecated remote loading).
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # referencing's attrs class takes `ref`


NOTHING_REMOTE = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


@lru_cache(maxsize=64)
def _validator_class(draft_uri: str) -> Any:
    base = validators.validator_for({"$schema": draft_uri}, default=validators.validator_for({"$schema": DRAFT_07}))
    checkers: dict[str, Any] = {"pattern": _pattern}
    if "patternProperties" in base.VALIDATORS:
        checkers["patternProperties"] = _pattern_properties
    return validators.extend(base, checkers)


def validator_class(schema: dict[str, Any]) -> Any:
    """The validator class for a schema's own draft (draft-07 without `$schema`), matching patterns with RE2."""
    declared = schema.get("$schema") if isinstance(schema.get("$schema"), str) else DRAFT_07
    return _validator_class(declared)


def schema_validator(schema: dict[str, Any]) -> Any:
    """A validator for `schema` that checks formats (`uri`, `date-time`, ...) and never fetches anything."""
    cls = validator_class(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER, registry=NOTHING_REMOTE)


def violations(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """Every way `arguments` break `schema`, as `$.path: message`, in document order.

    Example:
        >>> violations({"type": "object", "required": ["a"]}, {})
        ["$: 'a' is a required property"]
    """
    try:
        errors = list(schema_validator(schema).iter_errors(arguments))
    except Unresolvable as err:
        return [f"$: the schema refers to {err.ref!r}, which is not in it"]
    except RecursionError:
        return ["$: the value, or the schema's references, nest too deeply to be checked"]
    found = sorted(errors, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [_printable(f"{error.json_path}: {error.message}") for error in found] + unstorable(arguments, "$")


def unstorable(value: Any, path: str) -> list[str]:
    """What Prefect's database cannot hold, whatever the schema allows, each as `<JSON path>: <what>`.

    Example:
        >>> unstorable({"a": [1, "x\\x00"]}, "$")
        ["$.a[1]: contains the NUL character (\\\\u0000), which Prefect's database cannot store"]
    """
    said = []
    for location, problem in unstorable_at(value):
        where = path + "".join(f"[{part}]" if isinstance(part, int) else f".{_printable(part)}" for part in location)
        said.append(f"{where}: {problem}")
    return said


def unstorable_at(value: Any, location: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
    """Where a document holds what Prefect's database cannot: integers past 64 bits (SQLite stores them but the
    server's listings then fail) and the NUL character (PostgreSQL refuses it in JSON, and the server answers 503 to
    every retry). Each place is the keys and indexes that lead to it, with what is wrong there."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int) and abs(value) > INT64:
        return [(location, f"{value} is larger than a 64-bit integer")]
    if isinstance(value, float) and not math.isfinite(value):
        return [(location, f"{value} is not a finite number (JSON has no NaN or Infinity)")]
    if isinstance(value, str) and "\x00" in value:
        return [(location, NUL_PROBLEM)]
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                found.append(((*location, key.replace("\x00", "")), f"a key {NUL_PROBLEM}"))
            found += unstorable_at(item, (*location, key))
        return found
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in unstorable_at(item, (*location, index))]
    return []


NUL_PROBLEM = "contains the NUL character (\\u0000), which Prefect's database cannot store"


def _printable(text: str) -> str:
    """`text` without NUL characters, which would make a message as unstorable as the argument it names."""
    return text.replace("\x00", "\\u0000")


def prepare_arguments(task: str, schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """The document a container receives: validated as given, then the defaults of optional arguments filled in.

    `default` is an annotation (JSON Schema's own semantics): a required argument is required whether or not its
    schema gives a default. Prefect passes `None` for an argument nobody gave (the flow's signature default), and its
    UI sends `null` for an empty field: both mean "not given", unless the argument's schema accepts null.

    Args:
        task: the task's name, for the error message.
        schema: the task's argument schema.
        arguments: as given by a user, a schedule or Prefect's run form.

    Returns:
        The validated arguments, a new dict.

    Raises:
        ArgumentsInvalid: listing every violation, unknown arguments included.
    """
    properties = schema.get("properties", {})
    document = {
        name: value for name, value in arguments.items() if value is not None or _accepts_null(properties.get(name))
    }
    takes = f" (the task takes: {', '.join(properties) or 'no arguments'})"
    found = [f"$: unknown argument {name!r}{takes}" for name in document if name not in properties]
    found += violations(schema, document)
    if found:
        raise ArgumentsInvalid(task, found)
    required = set(schema.get("required", []))
    for name, spec in properties.items():
        if name not in document and name not in required and isinstance(spec, dict) and "default" in spec:
            document[name] = spec["default"]
    found = violations(schema, document)
    if found:  # a default that breaks its own schema
        raise ArgumentsInvalid(task, [f"{violation} (a default of the task's schema)" for violation in found])
    return document


def _accepts_null(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    kind = spec.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def schema_problems(schema: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """What keeps `schema` from being a task's argument schema, each with where it is: invalid for its own draft; not
    an object of named properties; a pattern RE2 cannot evaluate in linear time; a `$ref` to anything outside it."""
    base = ("validator", "schema")
    try:
        validator_class(schema).check_schema(schema)
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
        elif RESERVED_VARIABLES.match(variable_name(name)):
            problems.append(
                ((*base, "properties", name), f"argument name {name!r} would be the container contract's own "
                 f"variable {variable_name(name)}: rename it")
            )  # fmt: skip
    for location, pattern in _patterns(schema, base):
        try:
            compiled_pattern(pattern)
        except re2.error as err:
            reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
            problems.append(
                (
                    location,
                    f"pattern {pattern!r} cannot be evaluated in linear time ({reason}): rewrite it without "
                    "back-references or look-arounds",
                )
            )
    resolver = _resolver(schema)
    for location, reference in _references(schema, base):
        try:
            target = resolver.lookup(reference).contents
        except Unresolvable:
            problems.append((location, f"$ref {reference!r} does not resolve inside the schema; nothing is fetched"))
            continue
        if _leads_back(target, id(_node_at(schema, location[len(base) : -1])), resolver):
            problems.append(
                (location, f"$ref {reference!r} leads back to itself without describing a part of the value: "
                           "validation would never end")
            )  # fmt: skip
    return problems


# Keywords that apply their schemas to the very same value: a `$ref` cycle through these alone never ends.
SAME_VALUE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref")


def _leads_back(node: Any, start: int, resolver: Any, seen: set[int] | None = None) -> bool:
    """Whether `node` applies, to the same value, the schema whose id is `start` (following `$ref`s and the
    combinators of SAME_VALUE, never a keyword that descends into a part of the value)."""
    seen = set() if seen is None else seen
    if not isinstance(node, dict) or id(node) in seen:
        return False
    if id(node) == start:
        return True
    seen.add(id(node))
    for applied in SAME_VALUE:
        value = node.get(applied)
        if applied == "$ref" and isinstance(value, str):
            try:
                if _leads_back(resolver.lookup(value).contents, start, resolver, seen):
                    return True
            except Unresolvable:
                continue
        elif isinstance(value, (list, dict)) and any(
            _leads_back(item, start, resolver, seen) for item in (value if isinstance(value, list) else [value])
        ):
            return True
    return False


def _node_at(schema: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        schema = schema[part]
    return schema


def _resolver(schema: dict[str, Any]) -> Any:
    """Resolves references as validation would: within the schema (by its `$id`, if any), never fetching."""
    declared = schema["$schema"] if isinstance(schema.get("$schema"), str) else DRAFT_07
    resource = specification_with(declared, default=DRAFT7).create_resource(schema)
    base = schema["$id"] if isinstance(schema.get("$id"), str) else ""
    return NOTHING_REMOTE.with_resource(uri=base, resource=resource).resolver(base_uri=base)


def _walk(node: Any, location: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield location, node
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):  # data, not schema
                yield from _walk(value, (*location, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*location, index))


def _patterns(schema: dict[str, Any], base: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    for location, node in _walk(schema, base):
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("pattern"), str) and location[-1:] != ("properties",):
            yield (*location, "pattern"), node["pattern"]
        if isinstance(node.get("patternProperties"), dict) and location[-1:] != ("properties",):
            for pattern in node["patternProperties"]:
                yield (*location, "patternProperties", pattern), pattern


def _references(schema: dict[str, Any], base: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    for location, node in _walk(schema, base):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str) and location[-1:] != ("properties",):
            yield (*location, "$ref"), node["$ref"]
