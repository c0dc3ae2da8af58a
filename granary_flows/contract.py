"""What a container sees: its arguments as one JSON document, as a file, and one variable per argument."""

from __future__ import annotations

import json
from typing import Any

ARGUMENTS_FILE = "/granary/arguments.json"
INPUT_DIR = "/granary/inputs"
OUTPUT_DIR = "/granary/outputs"


def variable_name(argument: str) -> str:
    """Seed's naming: upper-case, `-` becomes `_`.

    Example:
        >>> variable_name("red-band")
        'RED_BAND'
    """
    return argument.upper().replace("-", "_")


def environment(
    arguments: dict[str, Any], execution_id: str, task: str, attempt: int, output_uri: str | None = None
) -> dict[str, str]:
    """The container's environment for one attempt of an execution.

    Strings are given as they are, everything else as JSON (`3`, `true`, `[1, 2]`). A Batch job gets `OUTPUT_URI`
    (an `s3://` prefix it writes its outputs to) instead of the mounted `OUTPUT_DIR` and arguments file.
    """
    variables = {
        variable_name(name): value if isinstance(value, str) else json.dumps(value) for name, value in arguments.items()
    }
    variables |= {
        "GRANARY_ARGUMENTS": json.dumps(arguments),
        "GRANARY_EXECUTION_ID": execution_id,
        "GRANARY_TASK": task,
        "GRANARY_ATTEMPT": str(attempt),
    }
    if output_uri:
        return variables | {"OUTPUT_URI": output_uri}
    return variables | {"GRANARY_ARGUMENTS_FILE": ARGUMENTS_FILE, "OUTPUT_DIR": OUTPUT_DIR}


def parse_progress(line: str) -> tuple[float, str | None] | None:
    """`(percent, message)` from a `{"progress": N, "message": "..."}` line, else None."""
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
