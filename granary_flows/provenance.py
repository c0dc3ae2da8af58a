"""Who started a run. The HTTP API tags each run it creates with its submitter (`submitted-by:<user>`, which Prefect's
UI shows) and with that user's owner mark (`granary-owner:<mark>`, an HMAC of the user's name with the installation's
owner key, `keys`). Only the API can make the mark, so a `submitted-by` tag written anywhere else (Prefect's UI or API,
a task's or a schedule's tags) makes nobody the run's owner: such a run, like any run started by a schedule or from
Prefect itself, says so and is the admin's alone.
"""

from __future__ import annotations

from typing import Any

from granary_flows.keys import Keys, current_keys

SUBMITTER_TAG = "submitted-by:"
OWNER_TAG = "granary-owner:"
RESERVED_TAGS = (SUBMITTER_TAG, OWNER_TAG)  # the API's own: nobody else may ask for them
SCHEDULE = "schedule"
PREFECT = "prefect"


def owner_tags(subject: str, keys: Keys) -> list[str]:
    """The tags that make `subject` a run's owner.

    Example:
        >>> owner_tags("alice", Keys(signing="s", owner="o"))[0]
        'submitted-by:alice'
    """
    return [f"{SUBMITTER_TAG}{subject}", f"{OWNER_TAG}{keys.owner_mark(subject)}"]


def api_submitter(flow_run: Any) -> str | None:
    """The identity the HTTP API recorded on a run (its `submitted-by` tag, with the owner mark that proves the API
    wrote it), else None."""
    claimed = [tag.removeprefix(SUBMITTER_TAG) for tag in flow_run.tags if tag.startswith(SUBMITTER_TAG)]
    keys = current_keys() if claimed else None
    if keys is None:
        return None
    return next((subject for subject in claimed if set(owner_tags(subject, keys)) <= set(flow_run.tags)), None)


def started_by(flow_run: Any | None) -> str:
    """The API's submitter, else `schedule` for a scheduled run, else `prefect`."""
    if flow_run is None:
        return PREFECT
    created_by = getattr(flow_run, "created_by", None)
    scheduled = created_by is not None and str(getattr(created_by, "type", "")).upper().endswith("SCHEDULE")
    return api_submitter(flow_run) or (SCHEDULE if scheduled else PREFECT)
