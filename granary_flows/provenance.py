"""Who started a run. The HTTP API tags each run it creates with its submitter; a run without that tag was started by
a schedule or from Prefect itself (its UI, CLI or API), and says so."""

from __future__ import annotations

from typing import Any

SUBMITTER_TAG = "submitted-by:"
SCHEDULE = "schedule"
PREFECT = "prefect"


def submitter_tag(subject: str) -> str:
    return f"{SUBMITTER_TAG}{subject}"


def api_submitter(flow_run: Any) -> str | None:
    """The identity the HTTP API recorded on a run, else None."""
    return next((tag.removeprefix(SUBMITTER_TAG) for tag in flow_run.tags if tag.startswith(SUBMITTER_TAG)), None)


def started_by(flow_run: Any | None) -> str:
    """The API's submitter, else `schedule` for a scheduled run, else `prefect`."""
    if flow_run is None:
        return PREFECT
    created_by = getattr(flow_run, "created_by", None)
    scheduled = created_by is not None and str(getattr(created_by, "type", "")).upper().endswith("SCHEDULE")
    return api_submitter(flow_run) or (SCHEDULE if scheduled else PREFECT)
