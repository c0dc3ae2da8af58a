"""Naming where a task file is wrong: the field as a dotted path, and its line where the file has one."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError


def describe(err: ValidationError, root: yaml.Node | None = None, within: tuple[Any, ...] = ()) -> list[str]:
    """One line per pydantic error, as `field (line N): message`.

    Args:
        err: what pydantic refused.
        root: the file's YAML node tree, for line numbers (None: no lines).
        within: where the validated document sits in the file (e.g. `("seed", "manifest")`).
    """
    return [
        at(tuple(error["loc"]), "unknown field" if error["type"] == "extra_forbidden" else error["msg"], root, within)
        for error in err.errors()
    ]


def at(location: tuple[Any, ...], message: str, root: yaml.Node | None, within: tuple[Any, ...] = ()) -> str:
    field = ".".join(str(part) for part in location) or "(top level)"
    line = _line_of(within + location, root)
    return f"{field} (line {line}): {message}" if line else f"{field}: {message}"


def _line_of(location: tuple[Any, ...], node: yaml.Node | None) -> int | None:
    """The line of the deepest node of `location` that exists in the file."""
    line = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
