"""Links `granary api` honours without a bearer token, each an HMAC of what it opens, so that nothing needs storing
and nobody can make one for anything else:

- Granary's single-use results webhook, `POST <api>/api/executions/<id>/results/<webhookId>`, which a Batch job calls
  with `{"results": [...]}` or `{"message": "..."}` as Granary's docs describe;
- the quicklook pictures of an execution, `<api>/jobs/<id>/outputs/<name>?signature=...`, which Prefect's run page
  shows from another origin than the API's, where no token of the API's users is sent.

The key is `GRANARY_WEBHOOK_SECRET`, else a Prefect Secret block, `granary-webhook-secret`,
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
from urllib.parse import quote

from pydantic import SecretStr

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
            Secret(value=SecretStr(key)).save(SECRET_BLOCK, overwrite=False)
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


def output_signature(execution_id: str, relative: str, key: str) -> str:
    """The signature of a link to one file of an execution's outputs."""
    return hmac.new(key.encode(), f"output:{execution_id}/{relative}".encode(), hashlib.sha256).hexdigest()


def signature_holds(execution_id: str, relative: str, signature: str) -> bool:
    key = webhook_secret()
    if key is None:
        return False
    return same(output_signature(execution_id, relative, key), signature)


def same(expected: str, given: str) -> bool:
    """Whether a caller's signature or id is the expected one, in constant time; bytes, so that any text compares."""
    return hmac.compare_digest(expected.encode(), given.encode())


def output_url(api: str, execution_id: str, relative: str) -> str:
    """Where `granary api` serves one file of an execution's outputs (to whoever may see the execution).

    Example:
        >>> output_url("http://127.0.0.1:5050/", "0b6f", "maps/a b.tif")
        'http://127.0.0.1:5050/jobs/0b6f/outputs/maps/a%20b.tif'
    """
    return f"{api.rstrip('/')}/jobs/{execution_id}/outputs/{quote(relative)}"


def output_link(api: str, execution_id: str, relative: str) -> str:
    """A link to one file of an execution's outputs that the API serves without a token (signed when the key is
    known; without it, only to a signed-in browser)."""
    link = output_url(api, execution_id, relative)
    key = webhook_secret()
    return f"{link}?signature={output_signature(execution_id, relative, key)}" if key else link


def webhook_url(execution_id: str) -> str | None:
    """Where a job posts its results: set when the runner knows the API (`GRANARY_API_URL`), else None."""
    api = os.environ.get("GRANARY_API_URL")
    if not api:
        return None
    key = webhook_secret()
    if key is None:
        return None
    return f"{api.rstrip('/')}/api/executions/{execution_id}/results/{webhook_id(execution_id, key)}"
