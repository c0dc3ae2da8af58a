"""Granary's single-use results webhook: `POST <api>/api/executions/<id>/results/<webhookId>`, which a Batch job
calls with `{"results": [...]}` or `{"message": "..."}` as Granary's docs describe.

The webhook id is an HMAC of the execution id, so that nothing needs storing and nobody can guess another
execution's webhook. The key is `GRANARY_WEBHOOK_SECRET`, else a Prefect Secret block, `granary-webhook-secret`,
which `granary api` creates when it first starts; runners read it to give jobs their webhook URL (only when
`GRANARY_API_URL` says where the API is).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import uuid

SECRET_BLOCK = "granary-webhook-secret"
_cached: dict[str, str] = {}
_lock = threading.Lock()


def webhook_secret(create: bool = False) -> str | None:
    """The key webhook ids are made with; with `create`, a new one is stored when there is none."""
    if os.environ.get("GRANARY_WEBHOOK_SECRET"):
        return os.environ["GRANARY_WEBHOOK_SECRET"]
    with _lock:
        if "key" in _cached:
            return _cached["key"]
        from prefect.blocks.system import Secret

        try:
            key = str(Secret.load(SECRET_BLOCK).get())  # type: ignore[union-attr]
        except ValueError:
            if not create:
                return None
            key = secrets.token_hex(32)
            Secret(value=key).save(SECRET_BLOCK, overwrite=False)
        _cached["key"] = key
        return key


def webhook_id(execution_id: str, key: str) -> str:
    """The execution's webhook id.

    Example:
        >>> run = "0b6f7f7e-0000-4000-8000-000000000000"
        >>> webhook_id(run, "k") == webhook_id(run, "k") != webhook_id(run, "other key")
        True
    """
    digest = hmac.new(key.encode(), execution_id.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def webhook_url(execution_id: str) -> str | None:
    """Where a job posts its results: set when the runner knows the API (`GRANARY_API_URL`), else None."""
    api = os.environ.get("GRANARY_API_URL")
    if not api:
        return None
    key = webhook_secret()
    if key is None:
        return None
    return f"{api.rstrip('/')}/api/executions/{execution_id}/results/{webhook_id(execution_id, key)}"
