"""OGC API - Processes - Part 1: Core 1.0 (and Part 2's deploy, replace, undeploy) over the registry and Prefect."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import time
from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort
from prefect.states import Cancelling
from pydantic import BaseModel, ConfigDict

from granary_flows import layout
from granary_flows.api.context import MAX_OFFSET, ApiError, Context, answer, logger
from granary_flows.api.execute import (
    ExecuteRequest,
    Links,
    RequestProblem,
    arguments_from,
    outputs_document,
    parse_request,
)
from granary_flows.api.identity import Forbidden, Identity, may_execute, record
from granary_flows.api.jobs import (
    JobQuery,
    JobStatus,
    parse_datetime_interval,
    read_jobs,
    status_info,
    status_of,
)
from granary_flows.api.processes import process_description, process_summary
from granary_flows.api.protection import parse_json, served_file_headers
from granary_flows.documents import ExecutionDocument
from granary_flows.errors import ArgumentsInvalid, DefinitionError
from granary_flows.keys import current_keys
from granary_flows.layout import is_runner_document, output_path_in
from granary_flows.loading import Definition, read_definition
from granary_flows.masking import Masker
from granary_flows.provenance import owner_tags, started_by
from granary_flows.registry import missing_image
from granary_flows.submission import server_reason
from granary_flows.validation import prepare_arguments
from granary_flows.webhooks import output_url

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/ogc-process-description",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/callback",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
    "http://www.opengis.net/spec/ogcapi-processes-2/1.0/conf/deploy-replace-undeploy",
]
API_TAG = "granary-api"
LONGEST_JOB = 100 * 365 * 24 * 3600.0  # seconds; a longer duration filter is refused, as no date reaches back so far
EXCEPTION = {
    "content": {"application/json": {"schema": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}}}}},
}  # fmt: skip
ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request", **EXCEPTION},
    401: {"description": "no valid identity", **EXCEPTION},
    403: {"description": "the identity lacks the right", **EXCEPTION},
    404: {"description": "not found, or not this identity's", **EXCEPTION},
    409: {"description": "the process exists already (deploy)", **EXCEPTION},
    413: {"description": "the request body is too large", **EXCEPTION},
    422: {"description": "an idempotency key reused for another request", **EXCEPTION},
    503: {"description": "the Prefect server is busy: send it again with the same Idempotency-Key", **EXCEPTION},
    500: {"description": "the job failed, or the server did", **EXCEPTION},
    504: {"description": "a synchronous execution did not end in time", **EXCEPTION},
}
router = APIRouter(responses=ANSWERS)


def context(request: Request) -> Context:
    return request.app.state.context  # type: ignore[no-any-return]


def identity(request: Request, ctx: Context = Depends(context)) -> Identity:
    """Every route but the landing page, conformance and the API document needs a valid identity."""
    found = ctx.identify(request)
    request.state.identity = found
    return found


@router.get("/", summary="landing page", tags=["Capabilities"])
def landing(request: Request, ctx: Context = Depends(context)) -> Any:
    base = ctx.base_url(request)
    document = {
        "title": ctx.settings.title,
        "description": ctx.settings.description,
        "links": [
            {"href": f"{base}/?f=json", "rel": "self", "type": "application/json", "title": "this document"},
            {"href": f"{base}/?f=html", "rel": "alternate", "type": "text/html", "title": "this document as HTML"},
            {"href": f"{base}/openapi.json", "rel": "service-desc",
             "type": "application/vnd.oai.openapi+json;version=3.0", "title": "the API definition (OpenAPI 3.0)"},
            {"href": f"{base}/api.html", "rel": "service-doc", "type": "text/html", "title": "the API documentation"},
            {"href": f"{base}/conformance", "rel": "http://www.opengis.net/def/rel/ogc/1.0/conformance",
             "type": "application/json", "title": "conformance classes implemented"},
            {"href": f"{base}/processes", "rel": "http://www.opengis.net/def/rel/ogc/1.0/processes",
             "type": "application/json", "title": "the processes"},
            {"href": f"{base}/jobs", "rel": "http://www.opengis.net/def/rel/ogc/1.0/job-list",
             "type": "application/json", "title": "the jobs"},
        ],
    }  # fmt: skip
    if ctx.authenticator.settings.off:
        document["authentication"] = "off: anyone who reaches this API may register, run, see and dismiss everything"
    return answer(request, document, "landing")


@router.get("/conformance", summary="conformance classes", tags=["ConformanceDeclaration"])
def conformance(request: Request) -> Any:
    return answer(request, {"conformsTo": CONFORMANCE}, "conformance")


@router.get("/processes", summary="the processes", tags=["ProcessList"])
def processes(
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = Depends(context),
    who: Identity = Depends(identity),
) -> Any:
    base = ctx.base_url(request)
    visible = [e for e in ctx.entries().values() if may_execute(who, e.access)]
    page = visible[offset : offset + limit]
    links = [{"href": f"{base}/processes?limit={limit}&offset={offset}", "rel": "self", "type": "application/json"},
             {"href": f"{base}/processes?limit={limit}&offset={offset}&f=html", "rel": "alternate",
              "type": "text/html"}]  # fmt: skip
    if offset + limit < len(visible):
        links.append({"href": f"{base}/processes?limit={limit}&offset={offset + limit}", "rel": "next",
                      "type": "application/json"})  # fmt: skip
    if offset:
        links.append({"href": f"{base}/processes?limit={limit}&offset={max(offset - limit, 0)}", "rel": "prev",
                      "type": "application/json"})  # fmt: skip
    summaries = [process_summary(e.model(), base) for e in page]
    return answer(request, {"processes": summaries, "links": links}, "processes")


@router.get("/processes/{process_id}", summary="a process", tags=["ProcessDescription"])
def process(
    request: Request, process_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)
) -> Any:
    definition = ctx.definition(process_id)
    _may_execute(who, definition)
    return answer(request, process_description(definition, ctx.base_url(request)), "process")


def _may_execute(who: Identity, definition: Definition) -> None:
    """Listings show only what an identity may run; asking for another process by name is refused, and says why."""
    if not may_execute(who, list(definition.access)):
        raise Forbidden(f"running {definition.name!r} needs one of the roles {', '.join(definition.access)}")


@router.post("/processes/{process_id}/execution", summary="execute a process", tags=["Execute"])
async def execute(
    request: Request, process_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)
) -> Any:
    """A synchronous execute waits on the event loop, not in a worker thread: a thread is held only while a request
    to Prefect is under way, so that waiting executes never starve the API's other routes."""
    from starlette.concurrency import run_in_threadpool

    body = await _json(request)
    accepted = await run_in_threadpool(_accept, request, process_id, body, ctx, who)
    if accepted.answer is not None:
        return accepted.answer
    final = await _wait(ctx, accepted.flow_run.id, ctx.settings.sync_timeout)
    if final is None:
        raise ApiError(
            504, "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/timeout",
            f"the execution did not end within {ctx.settings.sync_timeout:g} s",
            f"it goes on: its status is at {accepted.location['Location']}", accepted.location,
        )  # fmt: skip
    asked = accepted.asked
    return await run_in_threadpool(
        _results, request, ctx, final, process_id, accepted.definition, asked.outputs, asked.response,
        accepted.location,
    )  # fmt: skip


class _Accepted(BaseModel):
    """An execute request that created (or found) its job: the answer already, when asynchronous."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    flow_run: Any
    definition: Any
    asked: ExecuteRequest
    location: dict[str, str]
    answer: Any = None


def _accept(request: Request, process_id: str, body: Any, ctx: Context, who: Identity) -> _Accepted:
    definition = ctx.definition(process_id)
    _may_execute(who, definition)
    try:
        asked = parse_request(body)
        arguments = arguments_from(asked.inputs, definition.arguments_schema)
        prepare_arguments(definition.name, definition.arguments_schema, arguments)
        if asked.subscriber:
            from granary_flows.api.callbacks import check_subscriber

            check_subscriber(asked.subscriber)
    except (RequestProblem, ArgumentsInvalid) as err:
        problems = err.problems if isinstance(err, RequestProblem) else err.violations
        record(who, "execute", process_id, "refused", problems=problems)
        raise ApiError(400, "invalid-parameter", "invalid inputs", "; ".join(problems)) from err
    options = set(definition.jobControlOptions)
    prefer = request.headers.get("prefer", "")
    run_async = "async-execute" in options and ("respond-async" in prefer or "sync-execute" not in options)
    flow_run = create_job(ctx, request, who, process_id, arguments, [API_TAG])
    base = ctx.base_url(request)
    if asked.subscriber:
        request.app.state.callbacks.subscribe(str(flow_run.id), asked.subscriber, process_id, base)
    location = {"Location": f"{base}/jobs/{flow_run.id}"}
    accepted = _Accepted(flow_run=flow_run, definition=definition, asked=asked, location=location)
    if run_async:
        headers = location | ({"Preference-Applied": "respond-async"} if "respond-async" in prefer else {})
        accepted.answer = JSONResponse(status_info(flow_run, process_id, base), status_code=201, headers=headers)
    return accepted


def create_job(
    ctx: Context,
    request: Request,
    who: Identity,
    process_id: str,
    arguments: dict[str, Any],
    tags: list[str],
    name: str | None = None,
) -> Any:
    """Create a job's flow run once, owned by `who` (`provenance`): a client's `Idempotency-Key` (or one of this
    request's own) makes a retry find the job already created instead of a second one, and a server that answers 503
    after creating it is asked again. A key is the client's within its user's own: two users' keys never meet.

    Raises:
        ApiError: 400 when the server refuses the run; 422 for a key reused with other inputs; 503 (with the key to
            retry with) when the server did not answer.
    """
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from granary_flows.submission import KeyReused, create_run

    given = request.headers.get("idempotency-key", "")
    key = idempotency_key(who.subject, given or str(uuid4()))
    retry = {"Idempotency-Key": given} if given else {}
    entry = ctx.entry(process_id)
    keys = current_keys(create=True)
    tags = [*tags, *owner_tags(who.subject, keys)] if keys else tags
    try:
        flow_run = create_run(ctx.client, UUID(str(entry.deployment_id)), arguments, key, tags=tags, name=name)
    except KeyReused as err:
        raise ApiError(422, "invalid-parameter", "the idempotency key was used for another request", str(err)) from err
    except PrefectHTTPStatusError as err:
        reason = server_reason(err.response)
        record(who, "execute", process_id, "refused", reason=reason)
        if err.response.status_code >= 500:
            again = "send the request again with the same Idempotency-Key header: it will not be run twice"
            raise ApiError(
                503, "server-unavailable", "the Prefect server is busy", again, retry | {"Retry-After": "5"}
            ) from err
        raise ApiError(400, "invalid-parameter", "the execution was refused", reason) from err
    except httpx.TransportError as err:
        record(who, "execute", process_id, "refused", reason=str(err))
        again = "send the request again with the same Idempotency-Key header: it will not be run twice"
        raise ApiError(
            503, "server-unavailable", "the Prefect server did not answer", again, retry | {"Retry-After": "5"}
        ) from err
    record(who, "execute", process_id, "accepted", job=str(flow_run.id))
    return flow_run


def idempotency_key(subject: str, given: str) -> str:
    """The key a job is created with: the client's key within a digest of its user's name, which has no `:` in it, so
    that no user's key can be another's.

    Example:
        >>> idempotency_key("a:b", "Z") != idempotency_key("a", "b:Z")
        True
    """
    return f"api:{hashlib.sha256(subject.encode(errors='surrogatepass')).hexdigest()}:{given}"


async def _wait(ctx: Context, flow_run_id: Any, timeout: float) -> Any:
    """The run once final, or None after `timeout`. The status is read at intervals of a tenth of the time waited
    so far (50 ms to 1 s): a client waits for the end of a one-second run about 0.1 s, not up to 0.3 s."""
    import asyncio

    from starlette.concurrency import run_in_threadpool

    begun = time.monotonic()
    while time.monotonic() - begun < timeout:
        flow_run = await run_in_threadpool(ctx.client.read_flow_run, flow_run_id)
        if flow_run.state and flow_run.state.is_final():
            return flow_run
        await asyncio.sleep(min(max(0.1 * (time.monotonic() - begun), 0.05), 1.0))
    return None


@router.get("/jobs", summary="the jobs", tags=["JobList"])
def jobs(
    request: Request,
    type: list[str] | None = Query(None),
    processID: list[str] | None = Query(None),
    status: list[str] | None = Query(None),
    datetime: str | None = Query(None),
    minDuration: float | None = Query(None, ge=0, le=LONGEST_JOB),
    maxDuration: float | None = Query(None, ge=0, le=LONGEST_JOB),
    scheduled: bool = Query(False, description="Also the runs of schedules that are not due yet (an extension)."),
    limit: int = Query(10, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    ctx: Context = Depends(context),
    who: Identity = Depends(identity),
) -> Any:
    base = ctx.base_url(request)
    try:
        statuses = [JobStatus(s) for s in _split(status)]
        after, before = parse_datetime_interval(datetime) if datetime else (None, None)
    except ValueError as err:
        raise ApiError(400, "invalid-parameter", "invalid query", str(err)) from err
    if type and "process" not in _split(type):
        found: list[Any] = []
        next_offset = None
    else:
        query = JobQuery(
            processes=_split(processID), statuses=statuses, created_after=after, created_before=before,
            min_duration=minDuration, max_duration=maxDuration, limit=limit, offset=offset,
            submitter=None if who.admin else who.subject, include_scheduled=scheduled,
        )  # fmt: skip
        found, next_offset = read_jobs(ctx.client, query, ctx.deployment_ids())
    progress = _progress_of(ctx, [f for f in found if status_of(f) is JobStatus.RUNNING])
    documents = [status_info(f, ctx.process_of(f) or "", base, progress.get(str(f.id))) for f in found]
    query_string = str(request.query_params)
    links = [{"href": f"{base}/jobs?{query_string}", "rel": "self", "type": "application/json"},
             {"href": f"{base}/jobs?{query_string}&f=html", "rel": "alternate", "type": "text/html"}]  # fmt: skip
    if next_offset is not None:
        params = dict(request.query_params) | {"offset": str(next_offset), "limit": str(limit)}
        links.append({"href": f"{base}/jobs?{_encode(params)}", "rel": "next", "type": "application/json"})
    if offset:
        params = dict(request.query_params) | {"offset": str(max(offset - limit, 0)), "limit": str(limit)}
        links.append({"href": f"{base}/jobs?{_encode(params)}", "rel": "prev", "type": "application/json"})
    return answer(request, {"jobs": documents, "links": links}, "jobs")


@router.get("/jobs/{job_id}", summary="a job's status", tags=["Status"])
def job(request: Request, job_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    flow_run, process_id = ctx.job(job_id, who)
    progress = _progress_of(ctx, [flow_run]).get(str(flow_run.id))
    document = status_info(flow_run, process_id, ctx.base_url(request), progress)
    document |= _stac_link(ctx, flow_run, process_id, ctx.base_url(request))
    return answer(request, document, "job")


@router.delete("/jobs/{job_id}", summary="dismiss a job", tags=["Dismiss"])
def dismiss(request: Request, job_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    """A running job is cancelled (its container or Batch job stops); a finished one is removed, with its results
    (OGC: "dismiss can be seen as cancelling a running job or removing artifacts of a finished job")."""
    flow_run, process_id = ctx.job(job_id, who)
    current = status_of(flow_run)
    if current in (JobStatus.SUCCESSFUL, JobStatus.FAILED) or (flow_run.state and flow_run.state.is_final()):
        document = status_info(flow_run, process_id, ctx.base_url(request)) | {"status": JobStatus.DISMISSED.value}
        _remove_job(ctx, flow_run, process_id)
        record(who, "dismiss", job_id, "removed", process=process_id, was=current.value)
        document["message"] = f"removed with its results (it was {current.value})"
        return answer(request, document, "job")
    if current is not JobStatus.DISMISSED:
        ctx.client.set_flow_run_state(flow_run.id, Cancelling(message=f"dismissed by {who.subject}"), force=True)
    record(who, "dismiss", job_id, "dismissed", process=process_id)
    flow_run = ctx.client.read_flow_run(flow_run.id)
    document = status_info(flow_run, process_id, ctx.base_url(request))
    document["status"] = JobStatus.DISMISSED.value  # the run is being stopped: its container or job is going
    return answer(request, document, "job")


def _remove_job(ctx: Context, flow_run: Any, process_id: str) -> None:
    """A finished job's results, its Item in its task's STAC Collection, and its flow run."""
    from granary_flows import stac

    execution_id = str(flow_run.id)
    ctx.store.remove_folder(layout.execution_folder(process_id, execution_id))
    stac.unpublish(ctx.store, process_id, {execution_id})
    ctx.client.delete_flow_run(flow_run.id)


@router.get("/jobs/{job_id}/results", summary="a job's results", tags=["Result"])
def results(request: Request, job_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    flow_run, process_id = ctx.job(job_id, who)
    definition = ctx.definition(process_id)
    return _results(request, ctx, flow_run, process_id, definition, {}, "document", {})


def _results(
    request: Request,
    ctx: Context,
    flow_run: Any,
    process_id: str,
    definition: Definition,
    wanted: dict[str, Any],
    response: str,
    headers: dict[str, str],
) -> Any:
    status = status_of(flow_run)
    if status in (JobStatus.ACCEPTED, JobStatus.RUNNING):
        raise ApiError(404, "result-not-ready", "the results are not ready", f"job {flow_run.id} is {status.value}")
    if status is JobStatus.DISMISSED:
        raise ApiError(404, "result-not-ready", "the job was dismissed", f"job {flow_run.id} has no results")
    if status is JobStatus.FAILED:
        raise ApiError(500, "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/job-failed", "the job failed",
                       _failure(ctx, flow_run, process_id), headers)  # fmt: skip
    document = ctx.results_document(flow_run, process_id)
    links = Links(ctx.store, ctx.base_url(request), process_id, str(flow_run.id))
    try:
        outputs = outputs_document(definition, document, wanted, links, ctx.store.read_bytes)
    except RequestProblem as err:
        raise ApiError(400, "invalid-parameter", "invalid outputs", "; ".join(err.problems)) from err
    if response == "raw":
        return _raw(outputs, headers)
    return answer(request, outputs, "results", headers=headers)


def _raw(outputs: dict[str, Any], headers: dict[str, str]) -> Response:
    """`response: raw`: outputs by reference as `Link` headers of an empty answer (204, as OGC's
    /req/core/job-creation-sync-raw-ref says); one output by value as itself; several as multipart/related."""
    import base64

    if outputs and all(isinstance(v, dict) and "href" in v for v in outputs.values()):
        links = ", ".join(
            f'<{link["href"]}>; rel="item"; type="{link.get("type", "application/octet-stream")}"; title="{name}"'
            for name, link in outputs.items()
        )
        return Response(status_code=204, headers=headers | {"Link": links})

    def part(value: Any) -> tuple[bytes, str]:
        if isinstance(value, dict) and "value" in value and "mediaType" in value:
            data = value["value"]
            raw = base64.b64decode(data) if value.get("encoding") == "base64" else str(data).encode()
            return raw, value["mediaType"]
        return json.dumps(value).encode(), "application/json"

    if len(outputs) == 1:
        content, media_type = part(next(iter(outputs.values())))
        return Response(content, media_type=media_type, headers=headers)
    boundary = "granary-outputs"
    body = b""
    for name, value in outputs.items():
        content, media_type = part(value)
        body += (
            f"--{boundary}\r\nContent-ID: <{name}>\r\nContent-Type: {media_type}\r\n\r\n".encode() + content + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return Response(body, media_type=f"multipart/related; boundary={boundary}", headers=headers)


@router.get("/jobs/{job_id}/outputs/{path:path}", summary="a result file", tags=["Result"])
def output_file(
    request: Request,
    job_id: str,
    path: str,
    expires: str | None = Query(None, description="A signed link's expiry (Unix seconds)."),
    signature: str | None = Query(None, description="A signed link's signature: it opens this one file alone."),
    ctx: Context = Depends(context),
) -> Any:
    """A file of a job's outputs, for whoever may see the job, or for a signed link to it until the link expires
    (then a browser is asked to sign in, and lands here). On S3 the answer leads to a fresh presigned link."""
    from granary_flows.webhooks import output_link_holds

    relative = output_path_in(path, None)
    if signature is not None and expires is not None and output_link_holds(job_id, relative or "", expires, signature):
        flow_run, process_id = ctx.job_by_signed_link(job_id)
    else:
        flow_run, process_id = ctx.job(job_id, identity(request, ctx))
    if relative is None or not _served(relative, flow_run):
        raise ApiError(404, "not-found", "no such result", path)
    own = ctx.store.execution_uri(process_id, str(flow_run.id))
    uri = f"{own}/{relative}"
    if ctx.store.is_s3:
        if not ctx.store.exists(f"{layout.execution_folder(process_id, str(flow_run.id))}/{relative}"):
            raise ApiError(404, "not-found", "no such result", path)
        return RedirectResponse(str(ctx.store.presign(uri, own)), status_code=303)
    try:
        chunks = ctx.store.stream(uri)
    except (OSError, ValueError) as err:
        raise ApiError(404, "not-found", "no such result", path) from err
    media_type, headers = served_file_headers(relative, mimetypes.guess_type(relative)[0] or "application/octet-stream")
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


def _served(relative: str, flow_run: Any) -> bool:
    """Whether a file of an execution's folder is served as an output: anything the container wrote, and of the
    runner's own documents only the STAC Item and the quicklooks of a job that succeeded (the runner wrote those last,
    over anything of the same name); never its records or results document, which have routes of their own."""
    if not is_runner_document(relative):
        return True
    written_last = relative == layout.ITEM_FILE or relative.startswith(layout.QUICKLOOK_PREFIX)
    return written_last and status_of(flow_run) is JobStatus.SUCCESSFUL


@router.get("/jobs/{job_id}/logs", summary="a job's container logs (an extension)", tags=["Extensions"])
def logs(request: Request, job_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    flow_run, process_id = ctx.job(job_id, who)
    lines: list[dict[str, Any]] = []
    while True:
        page = ctx.client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=200,
            offset=len(lines),
        )
        lines += [{"time": log.timestamp.isoformat(), "level": log.level, "message": log.message} for log in page]
        if len(page) < 200 or len(lines) >= 20_000:
            break
    return answer(request, {"jobID": job_id, "processID": process_id, "logs": lines}, "logs")


@router.get("/jobs/{job_id}/metadata", summary="a job's provenance (an extension)", tags=["Extensions"])
def metadata(request: Request, job_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    flow_run, process_id = ctx.job(job_id, who)
    entry = ctx.entry(process_id)
    document = ctx.find_results(flow_run, process_id)
    execution = document if isinstance(document, ExecutionDocument) else None
    docker = entry.definition.get("runtime", {}).get("docker") or {}
    provenance = {
        "jobID": job_id,
        "processID": process_id,
        "processVersion": flow_run.flow_version or (document.version if document else None) or entry.version,
        "submitter": started_by(flow_run),
        "image": (execution.image if execution else None) or docker.get("image"),
        "imageDigest": execution.image_digest if execution else None,
        "command": docker.get("command"),
        "arguments": (document.arguments if document else None) or Masker().document(flow_run.parameters),
        "attempts": execution.attempts if execution else None,
        "exitCode": execution.exit_code if execution else None,
        "created": flow_run.created.isoformat() if flow_run.created else None,
        "started": flow_run.start_time.isoformat() if flow_run.start_time else None,
        "finished": flow_run.end_time.isoformat() if flow_run.end_time else None,
        "status": status_of(flow_run).value,
        "stacItem": execution.stac_item if execution else None,
    }
    return answer(request, provenance, "metadata")


@router.post("/processes", summary="deploy a process (Part 2)", tags=["DRU"], status_code=201)
async def deploy(request: Request, ctx: Context = Depends(context), who: Identity = Depends(identity)) -> Any:
    _may_register(who)
    text = (await request.body()).decode(errors="replace")
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_deploy, request, text, None, ctx, who)


@router.put("/processes/{process_id}", summary="replace a process (Part 2)", tags=["DRU"])
async def replace(
    request: Request, process_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)
) -> Any:
    _may_register(who)
    text = (await request.body()).decode(errors="replace")
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_deploy, request, text, process_id, ctx, who)


def _may_register(who: Identity) -> None:
    """Before a body is even read: only the admin role registers, replaces and undeploys."""
    if not who.admin:
        raise Forbidden("registering processes needs the admin role")


def _deploy(request: Request, text: str, replacing: str | None, ctx: Context, who: Identity) -> Any:
    """Part 2: deploy (POST, a process that does not exist yet: 409 for one that does) or replace (PUT)."""
    if replacing is not None:
        ctx.entry(replacing)  # 404 when it does not exist
    try:
        loaded = read_definition(text, "request", folder=None)
        if replacing is not None and loaded.definition.name != replacing:
            raise DefinitionError(
                "request", [f"name: {loaded.definition.name!r} is not {replacing!r}, which it replaces"]
            )
        if replacing is None and ctx.registry.get(loaded.definition.name) is not None:
            record(who, "register", loaded.definition.name, "refused", reason="it exists")
            raise ApiError(409, "http://www.opengis.net/def/exceptions/ogcapi-processes-2/1.0/duplicated-process",
                           "the process exists already",
                           f"a process {loaded.definition.name!r} is deployed: PUT /processes/"
                           f"{loaded.definition.name} replaces it")  # fmt: skip
        entry = ctx.registry.register(loaded, registered_by=who.subject)
    except DefinitionError as err:
        record(who, "register", replacing or "(new)", "refused", problems=err.problems)
        raise ApiError(400, "invalid-parameter", "the definition is invalid", "; ".join(err.problems)) from err
    ctx.forget()
    record(who, "register", entry.name, "registered", version=entry.version, format=entry.source_format)
    base = ctx.base_url(request)
    document = process_summary(entry.model(), base)
    status = 200 if replacing else 201
    headers = {"Location": f"{base}/processes/{entry.name}"}
    problem = missing_image(loaded.definition)
    if problem:  # registered all the same: the image may be built or pulled later, or live on the workers' hosts
        headers["Warning"] = f'299 granary "{problem}"'.replace("\n", " ")
        logger.warning("process %s registered, but: %s", entry.name, problem)
    return JSONResponse(document, status_code=status, headers=headers)


@router.delete(
    "/processes/{process_id}",
    summary="undeploy a process (Part 2)",
    tags=["DRU"],
    status_code=204,
    response_class=Response,
    response_model=None,
)
def undeploy(
    request: Request, process_id: str, ctx: Context = Depends(context), who: Identity = Depends(identity)
) -> Any:
    if not who.admin:
        raise Forbidden("undeploying processes needs the admin role")
    ctx.entry(process_id)
    ctx.registry.remove(process_id)
    ctx.forget()
    record(who, "undeploy", process_id, "undeployed")
    return Response(status_code=204)


def _failure(ctx: Context, flow_run: Any, process_id: str) -> str:
    message = (flow_run.state.message if flow_run.state else "") or "failed"
    return message.removeprefix("Flow run encountered an exception: ")


def _stac_link(ctx: Context, flow_run: Any, process_id: str, base: str) -> dict[str, Any]:
    if status_of(flow_run) is not JobStatus.SUCCESSFUL:
        return {}
    item = ctx.store.uri(layout.item_document(process_id, str(flow_run.id)))
    href = ctx.store.presign(item, ctx.store.execution_uri(process_id, str(flow_run.id))) or output_url(
        base, str(flow_run.id), layout.ITEM_FILE
    )
    return {"stacItem": href}


def _progress_of(ctx: Context, runs: list[Any]) -> dict[str, int]:
    """The progress artifacts of running jobs, in one request."""
    if not runs:
        return {}
    artifacts = ctx.client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs]), type=ArtifactFilterType(any_=["progress"])
        ),
        limit=len(runs) * 2,
    )
    return {str(a.flow_run_id): int(float(str(a.data or 0))) for a in artifacts if a.flow_run_id}


def _split(values: list[str] | None) -> list[str]:
    return [part for value in values or [] for part in value.split(",") if part]


def _encode(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


async def _json(request: Request) -> Any:
    return parse_json(await request.body())
