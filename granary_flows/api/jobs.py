"""Jobs are flow runs: OGC's status words, statusInfo documents, and `/jobs` filters translated into Prefect's own
flow-run filters. Prefect's database is the only job store: runs started from the Prefect UI, `prefect deployment
run` or a schedule are jobs like the ones this API started."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterName,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel

from granary_flows.keys import current_keys
from granary_flows.provenance import OWNER_TAG, api_submitter, owner_tags
from granary_flows.words import SpecWord

RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"
EXCEPTIONS_REL = "http://www.opengis.net/def/rel/ogc/1.0/exceptions"
SERVER_PAGE = 200  # the most flow runs Prefect's server answers with at once


class JobStatus(SpecWord):
    """OGC API - Processes' status words."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"


STATES = {
    JobStatus.ACCEPTED: [StateType.SCHEDULED, StateType.PENDING],
    JobStatus.RUNNING: [StateType.RUNNING, StateType.PAUSED],
    JobStatus.SUCCESSFUL: [StateType.COMPLETED],
    JobStatus.FAILED: [StateType.FAILED, StateType.CRASHED],
    JobStatus.DISMISSED: [StateType.CANCELLED, StateType.CANCELLING],
}


def status_of(flow_run: FlowRun) -> JobStatus:
    kind = flow_run.state.type if flow_run.state else StateType.SCHEDULED
    return next(status for status, kinds in STATES.items() if kind in kinds)


def duration_of(flow_run: FlowRun, now: datetime) -> float:
    if flow_run.start_time is None:
        return 0.0
    end = flow_run.end_time if flow_run.end_time and flow_run.state and flow_run.state.is_final() else now
    return max(0.0, (end - flow_run.start_time).total_seconds())


def status_info(flow_run: FlowRun, process_id: str, base: str, progress: int | None = None) -> dict[str, Any]:
    """The statusInfo document of a job."""
    status = status_of(flow_run)
    job = f"{base}/jobs/{flow_run.id}"
    info: dict[str, Any] = {
        "type": "process",
        "processID": process_id,
        "jobID": str(flow_run.id),
        "status": status.value,
        "message": (flow_run.state.message if flow_run.state else None) or _said(status),
        "created": _iso(flow_run.created),
        "updated": _iso(flow_run.state.timestamp if flow_run.state else flow_run.updated),
        "progress": _progress(status, progress),
        "links": [
            {"href": job, "rel": "self", "type": "application/json", "title": "job status"},
            {"href": f"{job}?f=html", "rel": "alternate", "type": "text/html", "title": "job status as HTML"},
            {"href": f"{job}/logs", "rel": "logs", "type": "application/json", "title": "container logs"},
            {"href": f"{job}/metadata", "rel": "describedby", "type": "application/json", "title": "provenance"},
        ],
    }
    if flow_run.start_time:
        info["started"] = _iso(flow_run.start_time)
    if flow_run.state and flow_run.state.is_final() and flow_run.end_time:
        info["finished"] = _iso(flow_run.end_time)
    if status is JobStatus.SUCCESSFUL:
        info["links"].append(
            {"href": f"{job}/results", "rel": RESULTS_REL, "type": "application/json", "title": "job results"}
        )
    elif status is JobStatus.FAILED:
        info["links"].append(
            {"href": f"{job}/results", "rel": EXCEPTIONS_REL, "type": "application/json", "title": "job exception"}
        )
    submitter = api_submitter(flow_run)
    if submitter:
        info["submitter"] = submitter
    return info  # fmt: skip


def _progress(status: JobStatus, progress: int | None) -> int:
    if status is JobStatus.SUCCESSFUL:
        return 100
    return max(0, min(100, int(progress or 0)))


def _said(status: JobStatus) -> str:
    return {
        JobStatus.ACCEPTED: "accepted; waiting for a runner",
        JobStatus.RUNNING: "running",
        JobStatus.SUCCESSFUL: "finished",
        JobStatus.FAILED: "failed",
        JobStatus.DISMISSED: "dismissed",
    }[status]


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


class JobQuery(BaseModel):
    """`/jobs`'s filters, checked."""

    processes: list[str] = []
    statuses: list[JobStatus] = []
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    limit: int = 10
    offset: int = 0
    submitter: str | None = None  # only this submitter's jobs
    names: list[str] = []  # the runs' names (Granary's `name` filter)
    tags: list[str] = []  # tags every run must have (Granary's `tags`)
    include_scheduled: bool = False  # runs of a schedule that are not due yet: not jobs, unless asked for


def flow_run_filter(query: JobQuery) -> FlowRunFilter:
    """The Prefect filter a job query is: status, creation time, and what narrows the durations asked for."""
    now = datetime.now(timezone.utc)
    fields: dict[str, Any] = {}
    if query.statuses:
        kinds = [kind for status in query.statuses for kind in STATES[status]]
        fields["state"] = FlowRunFilterState(type=FlowRunFilterStateType(any_=kinds))
    # A job's creation is its expected start: the moment it was created, for a run started by hand or the API. A
    # schedule's runs are made ahead of time, due later: until they are due they are not jobs (they would bury the
    # real ones), unless asked for.
    latest = query.created_before
    if not query.include_scheduled:
        latest = min(latest, now) if latest else now
    if query.created_after or latest:
        fields["expected_start_time"] = FlowRunFilterExpectedStartTime.model_validate(
            {"after_": query.created_after, "before_": latest}
        )
    if query.min_duration is not None:  # it lasted at least so long, so it started at least that long ago
        started_before = now - timedelta(seconds=query.min_duration)
        fields["start_time"] = FlowRunFilterStartTime.model_validate({"before_": started_before})
    tags = [*query.tags, *(submitter_tags(query.submitter) if query.submitter is not None else [])]
    if tags:
        fields["tags"] = FlowRunFilterTags(all_=tags)
    if query.names:
        fields["name"] = FlowRunFilterName(any_=query.names)
    return FlowRunFilter.model_validate(fields)


def submitter_tags(subject: str) -> list[str]:
    """The tags every job of `subject` has: its submitter and owner mark (`provenance`)."""
    keys = current_keys()
    if keys is None:  # no keys, so no run was ever marked as anybody's
        return [f"{OWNER_TAG}none"]
    return owner_tags(subject, keys)


def read_jobs(
    client: SyncPrefectClient, query: JobQuery, deployment_ids: list[UUID]
) -> tuple[list[FlowRun], int | None]:
    """A page of jobs, newest first, and the offset of the next page (None when there is none).

    Everything but the exact durations is a filter on the server; a duration filter narrows the server's query (a
    job that lasted at least D started before now - D), and the pages it returns are then read in order until the
    page is full, so that paging stays exact: the offsets are the server's.
    """
    if not deployment_ids:
        return [], None
    flow_filter = FlowFilter(name=FlowFilterName(any_=query.processes)) if query.processes else None
    deployments = DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids))
    run_filter = flow_run_filter(query)
    exact = query.min_duration is not None or query.max_duration is not None
    found: list[FlowRun] = []
    offset = query.offset
    # One run more than the page says whether there is a next one; the server's largest page each time made a page of
    # 10 read and parse 200 runs. With a duration filter, pages are read until this one is full.
    size = SERVER_PAGE if exact else min(query.limit + 1, SERVER_PAGE)
    while True:
        page = client.read_flow_runs(
            flow_filter=flow_filter,
            flow_run_filter=run_filter,
            deployment_filter=deployments,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=size,
            offset=offset,
        )
        now = datetime.now(timezone.utc)
        for index, flow_run in enumerate(page):
            if not exact or _lasted(flow_run, query, now):
                if len(found) == query.limit:  # one more than asked for: there is a next page
                    return found, offset + index
                found.append(flow_run)
        if len(page) < size:
            return found, None
        offset += len(page)


def _lasted(flow_run: FlowRun, query: JobQuery, now: datetime) -> bool:
    duration = duration_of(flow_run, now)
    if query.min_duration is not None and duration < query.min_duration:
        return False
    return query.max_duration is None or duration <= query.max_duration


def parse_datetime_interval(text: str) -> tuple[datetime | None, datetime | None]:
    """OGC's `datetime`: an instant, or an interval `start/end` with `..` for an open end.

    Example:
        >>> parse_datetime_interval("2026-01-01T00:00:00Z/..")[0].year
        2026

    Raises:
        ValueError: naming what cannot be read.
    """
    if "/" not in text:
        moment = _moment(text)
        return moment, moment
    start, _, end = text.partition("/")
    return (None if start in ("", "..") else _moment(start)), (None if end in ("", "..") else _moment(end))


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"datetime {text!r} is not an RFC 3339 date-time or interval") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
