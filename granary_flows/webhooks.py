"""Links `granary api` honours without a bearer token, each signed for what it opens with the installation's signing
key (`keys`), so that nothing needs storing and nobody can make one for anything else:

- Granary's single-use results webhook, `POST <api>/api/executions/<id>/results/<webhookId>`, which a Batch job calls
  with `{"results": [...]}` or `{"message": "..."}` as Granary's docs describe;
- links to one file of an execution's outputs, `<api>/jobs/<id>/outputs/<name>?expires=...&signature=...`, which
  Prefect's run page shows from another origin than the API's, where no cookie of the API's users is sent. Such a
  link opens by itself until it expires (`GRANARY_LINK_SECONDS`, 7 days) or the signing key is rotated; after that the
  API asks for a sign-in and then serves the file to whoever may see the job.

Runners make both only when `GRANARY_API_URL` says where the API is.
"""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import quote

from granary_flows.keys import Keys, current_keys, same

WEBHOOK = "webhook"
OUTPUT = "output"
LINK_SECONDS = 7 * 24 * 3600  # S3's longest presigned link


def link_seconds() -> int:
    """How long a signed link opens by itself (`GRANARY_LINK_SECONDS`, 7 days)."""
    return int(os.environ.get("GRANARY_LINK_SECONDS") or LINK_SECONDS)


def webhook_id(execution_id: str, keys: Keys) -> str:
    """The execution's webhook id.

    Example:
        >>> run = "0b6f7f7e-0000-4000-8000-000000000000"
        >>> keys = Keys(signing="k", owner="o")
        >>> webhook_id(run, keys) == webhook_id(run, keys) != webhook_id(run, Keys(signing="other", owner="o"))
        True
    """
    return _as_uuid(keys.sign(WEBHOOK, execution_id))


def webhook_holds(execution_id: str, hook: str) -> bool:
    """Whether `hook` is the execution's webhook id, by the signing key or the one before it (a job that was running
    when the key was rotated keeps its webhook)."""
    keys = current_keys()
    if keys is None:
        return False
    return any(same(_as_uuid(mac), hook) for mac in keys.signatures(WEBHOOK, execution_id, previous=True))


def _as_uuid(hexdigest: str) -> str:
    return str(uuid.UUID(bytes=bytes.fromhex(hexdigest)[:16], version=4))


def output_url(api: str, execution_id: str, relative: str) -> str:
    """Where `granary api` serves one file of an execution's outputs (to whoever may see the execution).

    Example:
        >>> output_url("http://127.0.0.1:5050/", "0b6f", "maps/a b.tif")
        'http://127.0.0.1:5050/jobs/0b6f/outputs/maps/a%20b.tif'
    """
    return f"{api.rstrip('/')}/jobs/{execution_id}/outputs/{quote(relative)}"


def output_link(api: str, execution_id: str, relative: str, now: float | None = None) -> str:
    """A link to one file of an execution's outputs that opens without a sign-in until it expires (signed when the
    keys are known; without them, only for a signed-in browser)."""
    link = output_url(api, execution_id, relative)
    keys = current_keys()
    if keys is None:
        return link
    expires = str(int((time.time() if now is None else now) + link_seconds()))
    return f"{link}?expires={expires}&signature={keys.sign(OUTPUT, execution_id, relative, expires)}"


def output_link_holds(execution_id: str, relative: str, expires: str, signature: str) -> bool:
    """Whether a link's signature is the signing key's for this file and expiry, and it has not expired."""
    keys = current_keys()
    if keys is None or not expires.isdigit() or int(expires) < time.time():
        return False
    return keys.holds(signature, OUTPUT, execution_id, relative, expires)


def webhook_url(execution_id: str) -> str | None:
    """Where a job posts its results: set when the runner knows the API (`GRANARY_API_URL`), else None."""
    api = os.environ.get("GRANARY_API_URL")
    keys = current_keys() if api else None
    if not api or keys is None:
        return None
    return f"{api.rstrip('/')}/api/executions/{execution_id}/results/{webhook_id(execution_id, keys)}"
