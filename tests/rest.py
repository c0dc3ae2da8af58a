"""Calls to a Prefect server's REST API for the tests and bench/, where Prefect's client is not the thing tested."""

from __future__ import annotations

import time
from typing import Any

import httpx


def request(method: str, url: str, body: Any = None, patience: float = 120, timeout: float = 30) -> httpx.Response:
    """One call, retrying a busy SQLite server's 503 with a growing wait as Prefect's own client does, for up to
    `patience` seconds (a loaded CI machine holds SQLite's write lock for long); raises for any other error."""
    deadline = time.monotonic() + patience
    wait = 0.5
    while True:
        response = httpx.request(method, url, json=body, timeout=timeout)
        if response.status_code != 503 or time.monotonic() + wait > deadline:
            break
        time.sleep(wait)
        wait = min(wait * 2, 8)
    response.raise_for_status()
    return response
