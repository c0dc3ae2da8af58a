"""The container contract's fixed points: where a container finds its arguments and inputs, where it writes, and the
lines and files it may report with. How a given task's container takes its arguments is built by `invocation`."""

from __future__ import annotations

import json
import re
from typing import Any

ARGUMENTS_FILE = "/granary/arguments.json"
INPUT_DIR = "/granary/inputs"
INPUT_METADATA_FILE = "/granary/input-metadata.json"  # Scale's $INPUT_METADATA
RESULTS_FILE = "results.json"  # Granary's webhook shape, in the output folder
SIDECAR_SUFFIX = ".metadata.json"  # `<file>.metadata.json`: a GeoJSON Feature describing `<file>`
MAX_LINE = 64 * 1024  # a longer log line is cut, saying so
# The contract's own variables: no argument (nor Seed input) may be passed under one of these names.
RESERVED_VARIABLES = re.compile(r"^(OUTPUT_DIR|OUTPUT_URI|INPUT_METADATA|ALLOCATED_.*|GRANARY_.*|AWS_BATCH_.*)$")


def variable_name(argument: str) -> str:
    """Seed's naming: upper-case, `-` becomes `_`.

    Example:
        >>> variable_name("red-band")
        'RED_BAND'
    """
    return argument.upper().replace("-", "_")


def as_text(value: Any) -> str:
    """An argument's value as a container reads it in a variable, a parameter or a command: strings as they are,
    everything else as JSON.

    Example:
        >>> as_text("a b"), as_text(3), as_text(True), as_text([1, 2])
        ('a b', '3', 'true', '[1, 2]')
    """
    return value if isinstance(value, str) else json.dumps(value)


def parse_progress(line: str) -> tuple[float, str | None] | None:
    """`(percent, message)` from a `{"progress": N, "message": "..."}` line, else None.

    Example:
        >>> parse_progress('{"progress": 250, "message": "tiling"}')
        (100.0, 'tiling')
    """
    document = _json_line(line)
    if not isinstance(document, dict) or not isinstance(document.get("progress"), (int, float)):
        return None
    message = document.get("message")
    return max(0.0, min(100.0, float(document["progress"]))), message if isinstance(message, str) else None


def parse_plugin_results(line: str) -> Any | None:
    """The value of a process-api `{"plugin_results": ...}` line, else None."""
    document = _json_line(line)
    if isinstance(document, dict) and "plugin_results" in document:
        return document["plugin_results"]
    return None


def _json_line(line: str) -> Any:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None
