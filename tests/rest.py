"""Calls to a Prefect server's REST API for the tests and bench/, where Prefect's client is not the thing tested."""

from __future__ import annotations

import time
from typing import Any

import httpx


def request(method: str, url: str, body: Any = None, attempts: int = 6, timeout: float = 30) -> httpx.Response:
    """One call, retrying a busy SQLite server's 503 as Prefect's own client does; raises for any other error."""
    for attempt in range(attempts):
        response = httpx.request(method, url, json=body, timeout=timeout)
        if response.status_code != 503:
            break
        time.sleep(0.5 * (attempt + 1))
    response.raise_for_status()
    return response
