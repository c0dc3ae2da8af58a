"""Granary task documents: the body of Granary's `POST /api/tasks`, accepted exactly as Granary's docs show them.

```json
{"name": "A descriptive task name", "validator": {"schema": {...}},
 "jobDefinition": "perfectAccuracyTask:1", "jobQueue": "veryExpensiveOnDemandQueue"}
```
Granary's `name` is free text: it becomes the task's title, and its slug (`a-descriptive-task-name`) the task's name,
flow and deployment.
"""

from __future__ import annotations

import re
from typing import Any

MAX_NAME = 63


def is_granary_document(document: dict[str, Any]) -> bool:
    return "jobDefinition" in document and "runtime" not in document and "kind" not in document


def slug(text: str) -> str:
    """A task name from free text: lower-case letters and digits, words joined by `-`.

    Example:
        >>> slug("A descriptive task name"), slug("NDVI (Sentinel-2)")
        ('a-descriptive-task-name', 'ndvi-sentinel-2')
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:MAX_NAME].rstrip("-")


def task_document(document: dict[str, Any]) -> dict[str, Any]:
    """Our task file's shape for a Granary task document; the input is not changed.

    Example:
        >>> converted = task_document({"name": "Calculate Water", "validator": {"schema": {}},
        ...     "jobDefinition": "water:1", "jobQueue": "q"})
        >>> converted["name"], converted["title"], converted["runtime"]
        ('calculate-water', 'Calculate Water', {'batch': {'jobDefinition': 'water:1', 'jobQueue': 'q'}})
    """
    converted = {key: value for key, value in document.items() if key not in ("jobDefinition", "jobQueue", "id")}
    name = document.get("name")
    if isinstance(name, str):
        converted["name"] = slug(name) or name
        if converted["name"] != name:
            converted.setdefault("title", name)
    converted["runtime"] = {"batch": {"jobDefinition": document["jobDefinition"], "jobQueue": document.get("jobQueue")}}
    return converted
