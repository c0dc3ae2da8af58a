"""Granary's REST API, so that Granary's clients keep working: `/api/tasks`, `/api/executions` with Granary's JSON
shapes and filters, and the single-use results webhook. Tasks are registry entries (their id is their deployment's),
executions are flow runs (their id is the flow run's)."""

from __future__ import annotations

from datetime import timezone
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from prefect.client.schemas.objects import FlowRun, StateType

from granary_flows import layout
from granary_flows.api.context import MAX_OFFSET, ApiError, Context
from granary_flows.api.identity import Forbidden, Identity, may_execute, record
from granary_flows.api.jobs import JobQuery, JobStatus, read_jobs
from granary_flows.api.ogc import ANSWERS, API_TAG, context, create_job, identity
from granary_flows.api.protection import parse_json
from granary_flows.blocks import Entry
from granary_flows.documents import ExecutionDocument
from granary_flows.errors import ArgumentsInvalid, DefinitionError, GranaryError
from granary_flows.keys import current_keys
from granary_flows.layout import output_path_in
from granary_flows.loading import read_definition
from granary_flows.masking import Masker
from granary_flows.provenance import RESERVED_TAGS
from granary_flows.validation import prepare_arguments, unstorable
from granary_flows.webhooks import webhook_holds, webhook_id

router = APIRouter(prefix="/api", tags=["Granary"], responses=ANSWERS)
STATUS = {  # Granary's JobStatus words
    StateType.SCHEDULED: "CREATED",
    StateType.PENDING: "CREATED",
    StateType.RUNNING: "STARTED",
    StateType.PAUSED: "STARTED",
    StateType.CANCELLING: "STARTED",
    StateType.COMPLETED: "SUCCESSFUL",
    StateType.FAILED: "FAILED",
    StateType.CRASHED: "FAILED",
    StateType.CANCELLED: "FAILED",
}
FROM_STATUS = {"CREATED": JobStatus.ACCEPTED, "STARTED": JobStatus.RUNNING, "SUCCESSFUL": JobStatus.SUCCESSFUL,
               "FAILED": JobStatus.FAILED}  # fmt: skip


def task_document(entry: Entry) -> dict[str, Any]:
    """A registered task in Granary's `Task` shape."""
    batch = (entry.definition.get("runtime") or {}).get("batch") or {}
    given = entry.document.get("name") if isinstance(entry.document.get("name"), str) else entry.name
    return {
        "id": str(entry.deployment_id),
        "name": given,
        "validator": {"schema": (entry.definition.get("validator") or {}).get("schema", {})},
        "jobDefinition": batch.get("jobDefinition", ""),
        "jobQueue": batch.get("jobQueue", ""),
        "owner": None,
    }


@router.post("/tasks", summary="create a task (Granary)")
async def create_task(request: Request, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    if not who.admin:  # before the body is read
        raise Forbidden("creating tasks needs the admin role")
    text = (await request.body()).decode(errors="replace")
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_create_task, text, ctx, who)


def _create_task(text: str, ctx: Context, who: Identity) -> Any:
    try:
        loaded = read_definition(text, "request", folder=None)
        entry = ctx.registry.register(loaded, registered_by=who.subject)
    except (DefinitionError, GranaryError) as err:
        problems = err.problems if isinstance(err, DefinitionError) else [str(err)]
        record(who, "register", "(granary task)", "refused", problems=problems)
        return JSONResponse({"msg": "; ".join(problems)}, status_code=400)
    ctx.forget()
    record(who, "register", entry.name, "registered", format=entry.source_format)
    return task_document(entry)


@router.get("/tasks", summary="list tasks (Granary)")
def list_tasks(
    page: int = Query(0, ge=0, le=MAX_OFFSET // 1000), limit: int = Query(30, ge=1, le=1000),
    ctx: Context = Depends(context), who: Identity = Depends(identity),
) -> Any:  # fmt: skip
    tasks = [e for e in ctx.entries().values() if e.kind == "task" and may_execute(who, e.access)]
    chosen = tasks[page * limit : (page + 1) * limit]
    return {"page": page, "pageSize": limit, "results": [task_document(e) for e in chosen]}


@router.get("/tasks/{task_id}", summary="a task (Granary)")
def get_task(task_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    return task_document(_task(ctx, task_id, who))


def _task(ctx: Context, task_id: str, who: Identity) -> Entry:
    for entry in ctx.entries(fresh=True).values():
        if str(entry.deployment_id) == task_id:
            access = entry.access
            if not may_execute(who, access):
                raise Forbidden(f"running {entry.name!r} needs one of the roles {', '.join(access)}")
            return entry
    raise ApiError(404, "not-found", "no such task", f"no task {task_id!r}")


def execution_document(ctx: Context, flow_run: FlowRun, task: Entry) -> dict[str, Any]:
    """A flow run in Granary's `Execution` shape."""
    kind = flow_run.state.type if flow_run.state else StateType.SCHEDULED
    status = STATUS.get(kind, "CREATED")
    results: list[dict[str, Any]] = []
    if status == "SUCCESSFUL":
        document = ctx.find_results(flow_run, task.name)
        if isinstance(document, ExecutionDocument):
            own = ctx.store.execution_uri(task.name, str(flow_run.id))
            results = [
                asset.model_dump(mode="json", exclude_none=True)
                | {"href": ctx.store.presign(asset.href, own) or asset.href}
                for asset in document.results
            ]
    keys = current_keys()
    reason = flow_run.state.message if flow_run.state and status == "FAILED" else None
    return {
        "id": str(flow_run.id),
        "taskId": str(task.deployment_id),
        "invokedAt": flow_run.created.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        if flow_run.created
        else None,
        "arguments": Masker().document({k: v for k, v in (flow_run.parameters or {}).items() if v is not None}),
        "status": status,
        "statusReason": reason,
        "results": results,
        "webhookId": webhook_id(str(flow_run.id), keys) if keys and status in ("CREATED", "STARTED") else None,
        "owner": None,
        "name": flow_run.name,
        "tags": [t for t in flow_run.tags if t != API_TAG and not t.startswith(RESERVED_TAGS)],
    }


@router.post("/executions", summary="create an execution (Granary)")
async def create_execution(request: Request, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    try:
        body = parse_json(await request.body())
    except ApiError as err:
        return JSONResponse({"msg": f"{err.title}: {err.detail}"}, status_code=400)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_create_execution, request, body, ctx, who)


def _create_execution(request: Request, body: Any, ctx: Context, who: Identity) -> Any:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("taskId"), str)
        or not isinstance(body.get("arguments"), dict)
    ):
        return JSONResponse({"msg": "an execution needs a taskId and arguments (an object)"}, status_code=400)
    task = _task(ctx, body["taskId"], who)
    definition = ctx.definition(task.name)
    try:
        prepare_arguments(definition.name, definition.arguments_schema, body["arguments"])
    except ArgumentsInvalid as err:
        record(who, "execute", task.name, "refused", problems=err.violations)
        return JSONResponse({"msg": str(err), "errors": err.violations}, status_code=400)
    asked_tags = [str(t) for t in body.get("tags") or [] if t]
    unstored = unstorable({"name": body.get("name"), "tags": asked_tags}, "$")
    if unstored:
        return JSONResponse({"msg": "; ".join(unstored), "errors": unstored}, status_code=400)
    if any(t.startswith(RESERVED_TAGS) for t in asked_tags):
        reserved = " or ".join(repr(prefix) for prefix in RESERVED_TAGS)
        return JSONResponse({"msg": f"tags starting with {reserved} are the API's own"}, status_code=400)
    tags = [API_TAG, *asked_tags]
    name = str(body["name"]) if body.get("name") else None
    flow_run = create_job(ctx, request, who, task.name, body["arguments"], tags, name=name)
    return execution_document(ctx, flow_run, task)


@router.get("/executions", summary="list executions (Granary)")
def list_executions(
    page: int = Query(0, ge=0, le=MAX_OFFSET // 1000),
    limit: int = Query(30, ge=1, le=1000),
    taskId: str | None = Query(None),
    status: str | None = Query(None),
    name: str | None = Query(None),
    tags: list[str] | None = Query(None),
    ctx: Context = Depends(context),
    who: Identity = Depends(identity),
) -> Any:
    statuses = [FROM_STATUS[status.upper()]] if status and status.upper() in FROM_STATUS else []
    if status and not statuses:
        raise ApiError(
            400, "invalid-parameter", "invalid status", f"{status!r} is not CREATED, STARTED, SUCCESSFUL or FAILED"
        )
    entries = {str(e.deployment_id): e for e in ctx.entries().values()}
    if taskId is not None and taskId not in entries:
        return {"page": page, "pageSize": limit, "results": []}  # no such task, so none of its executions
    processes = [entries[taskId].name] if taskId is not None else []
    query = JobQuery(
        processes=processes, statuses=statuses, limit=limit, offset=page * limit,
        submitter=None if who.admin else who.subject, names=[name] if name else [], tags=tags or [],
    )  # fmt: skip
    found, _ = read_jobs(ctx.client, query, ctx.deployment_ids())
    by_deployment = {str(e.deployment_id): e for e in ctx.entries().values()}
    results = [
        execution_document(ctx, f, by_deployment[str(f.deployment_id)])
        for f in found
        if str(f.deployment_id) in by_deployment
    ]
    return {"page": page, "pageSize": limit, "results": results}


@router.get("/executions/{execution_id}", summary="an execution (Granary)")
def get_execution(execution_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    flow_run, process = ctx.job(execution_id, who)
    return execution_document(ctx, flow_run, ctx.entry(process))


@router.post("/executions/{execution_id}/results/{hook}", summary="Granary's single-use results webhook")
async def results_webhook(request: Request, execution_id: str, hook: str, ctx: Context = Depends(context)) -> Any:
    """No bearer token: the webhook id is the credential, as in Granary. It works once, while the execution runs, and
    its answer says only that it was taken: the webhook id opens nothing else of the job."""
    absent = ApiError(404, "not-found", "no such webhook", "it does not exist or was used already")
    if not webhook_holds(execution_id, hook):
        raise absent
    try:
        body = parse_json(await request.body())
    except ApiError as err:
        return JSONResponse({"msg": f"{err.title}: {err.detail}"}, status_code=400)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_deliver, execution_id, body, ctx, absent)


def _deliver(execution_id: str, body: Any, ctx: Context, absent: ApiError) -> Any:
    try:
        flow_run = ctx.client.read_flow_run(UUID(execution_id))
    except Exception as err:
        raise absent from err
    process = ctx.process_of(flow_run)
    if process is None or (flow_run.state and flow_run.state.is_final()):
        raise absent
    document = layout.webhook_document(execution_id)
    if ctx.store.exists(document):
        raise absent  # used already, by this attempt
    problem = _webhook_problem(body, ctx.store.execution_uri(process, execution_id))
    if problem:
        return JSONResponse({"msg": problem}, status_code=400)
    ctx.store.write_json(document, body)
    record(None, "webhook", execution_id, "delivered", kind="results" if "results" in body else "message")
    return {"id": execution_id, "accepted": True}


def _webhook_problem(body: Any, own: str) -> str | None:
    """What keeps a webhook body from being Granary's `{"results": [...]}` or `{"message": "..."}` with hrefs
    inside the execution's own outputs."""
    if isinstance(body, dict) and set(body) == {"message"} and isinstance(body["message"], str):
        return None
    if not isinstance(body, dict) or set(body) != {"results"} or not isinstance(body["results"], list):
        return 'the body must be {"results": [...]} or {"message": "..."}'
    for asset in body["results"]:
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str):
            return "every result needs an href"
        if output_path_in(href, own) is None:
            return f"result href {href!r} is not under the execution's own outputs ({own})"
    return None
