"""Calls to a Prefect server's REST API for the tests and bench/, where Prefect's client is not the thing tested."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import httpx


def request(method: str, url: str, body: Any = None, patience: float = 120, timeout: float = 30) -> httpx.Response:
    """One call, retrying a busy SQLite server's 503 with a growing wait as Prefect's own client does, for up to
    `patience` seconds (a loaded CI machine holds SQLite's write lock for long); raises for any other error."""
    deadline = time.monotonic() + patience
    wait = 0.5
    while True:
        response = httpx.request(method, url, json=body, timeout=timeout, auth=prefect_auth())
        if response.status_code != 503 or time.monotonic() + wait > deadline:
            break
        time.sleep(wait)
        wait = min(wait * 2, 8)
    response.raise_for_status()
    return response


def prefect_auth() -> httpx.BasicAuth | None:
    """The credential the tests' Prefect servers require (`PREFECT_API_AUTH_STRING`), for calls made with httpx."""
    credential = os.environ.get("PREFECT_API_AUTH_STRING")
    if not credential:
        return None
    user, _, password = credential.partition(":")
    return httpx.BasicAuth(user, password)


def one_credential() -> str:
    """One credential for a test session or a benchmark: every Prefect server it starts requires it, and every client
    sends it (both set in the environment, which must happen before Prefect is imported)."""
    credential = os.environ.get("PREFECT_SERVER_API_AUTH_STRING") or f"granary:{secrets.token_urlsafe(24)}"
    os.environ["PREFECT_SERVER_API_AUTH_STRING"] = os.environ["PREFECT_API_AUTH_STRING"] = credential
    return credential


def prefect_http(**options: Any) -> httpx.Client:
    """An httpx client for a Prefect server's REST API, sending the credential."""
    return httpx.Client(auth=prefect_auth(), **options)
