"""Deployments: one per task or pipeline, its run form the schema, created or updated in place (through the
registry, which keeps the definition beside it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.exceptions import ObjectNotFound

from granary_flows.definition import Registered, ScheduleSpec
from granary_flows.form import parameter_schema

ENTRYPOINT_MODULE = "granary_flows.entrypoint"


def create_deployment(
    client: SyncPrefectClient,
    definition: Registered,
    work_pool: str | None = None,
    pull_steps: list[dict[str, Any]] | None = None,
    version: str | None = None,
) -> UUID:
    """Create the deployment `<task>/<task>`, or bring an existing one up to date (schema, schedules, tags...).

    Args:
        client: a synchronous Prefect client.
        definition: the task or pipeline.
        work_pool: for `granary deploy`; None for deployments served by `granary serve`.
        pull_steps: what Prefect's own runner does before loading the flow (`serve --subprocess`).
        version: the deployment's version; default the definition's (the registry's is `Entry.deployment_version`).

    Returns:
        The deployment id, the same one each time the task is registered again.
    """
    flow_id = client.create_flow_from_name(definition.name)
    return client.create_deployment(
        flow_id=flow_id,
        name=definition.name,
        version=version or definition.version,
        description=definition.description or definition.title,
        tags=definition.tags,
        parameter_openapi_schema=parameter_schema(definition.arguments_schema),
        enforce_parameter_schema=True,
        entrypoint=f"{ENTRYPOINT_MODULE}:{definition.name}",
        work_pool_name=work_pool,
        pull_steps=pull_steps,
        # Creating an existing deployment updates it in place, its schedules replaced by these.
        schedules=[_schedule(spec) for spec in definition.schedules],
    )


def ensure_work_pool(client: SyncPrefectClient, name: str, pool_type: str = "process") -> bool:
    """Create the work pool when it does not exist yet. Returns True when it was created."""
    try:
        client.read_work_pool(name)
        return False
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
        return True


def _schedule(spec: ScheduleSpec) -> DeploymentScheduleCreate:
    if spec.cron:
        schedule: Any = CronSchedule(cron=spec.cron, timezone=spec.timezone)
    elif spec.interval:
        schedule = IntervalSchedule(interval=timedelta(seconds=spec.interval), timezone=spec.timezone)
    else:
        schedule = RRuleSchedule(rrule=spec.rrule or "", timezone=spec.timezone)
    return DeploymentScheduleCreate(schedule=schedule, active=spec.active, parameters=spec.parameters)
