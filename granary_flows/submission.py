"""Starting executions from outside a flow: validated locally first, then created as flow runs, then watched."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, Log
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Scheduled

from granary_flows.documents import ResultsDocument, parse_results, read_results
from granary_flows.errors import GranaryError, UnknownTask
from granary_flows.loading import Definition, refuse_repeated_keys
from granary_flows.store import ResultsStore
from granary_flows.validation import prepare_arguments


def parse_params(text: str) -> dict[str, Any]:
    """`--params`: every argument as one JSON object.

    Example:
        >>> parse_params('{"redBand": 3}')
        {'redBand': 3}

    Raises:
        GranaryError: naming `--params`, for what is not one JSON object, or one with a key given twice.
    """
    try:
        document = json.loads(text, object_pairs_hook=refuse_repeated_keys)
    except ValueError as err:
        raise GranaryError(f"--params is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise GranaryError("--params must be a JSON object")
    return document


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; a value is read as JSON where it is JSON (`3`, `true`, `[1,2]`), else as a string.

    Example:
        >>> parse_parameters(["redBand=3", "name=world"])
        {'redBand': 3, 'name': 'world'}
    """
    parameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise GranaryError(f"parameter {pair!r} must be NAME=VALUE")
        try:
            parameters[name] = json.loads(value, object_pairs_hook=refuse_repeated_keys)
        except json.JSONDecodeError:
            parameters[name] = value
        except ValueError as err:
            raise GranaryError(f"parameter {name}: {err}") from err
    return parameters


def validate(definition: Definition, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the container would get them; raises ArgumentsInvalid naming every violation."""
    return prepare_arguments(definition.name, definition.arguments_schema, arguments)


def submit(client: SyncPrefectClient, definition: Definition, arguments: dict[str, Any]) -> FlowRun:
    """Create a flow run of the task's deployment.

    Check the arguments with `validate` first, as `granary run` does before it even connects; the flow checks them
    again before any container starts.

    Raises:
        UnknownTask: the task has no deployment on this server (run `granary register` or `granary serve`).
        GranaryError: the server refused the run, with its reasons.
    """
    try:
        deployment = client.read_deployment_by_name(f"{definition.name}/{definition.name}")
    except ObjectNotFound as err:
        raise UnknownTask(
            f"task {definition.name!r} has no deployment on this Prefect server: "
            "run `granary register` or start `granary serve`"
        ) from err
    with refusals_said(f"the Prefect server refused the execution of {definition.name!r}"):
        return create_run(client, deployment.id, arguments, key=f"cli:{uuid4()}")


def create_run(
    client: SyncPrefectClient,
    deployment_id: UUID,
    arguments: dict[str, Any],
    key: str,
    tags: list[str] | None = None,
    name: str | None = None,
    patience: float = 30.0,
) -> FlowRun:
    """Create an execution's flow run exactly once for `key`.

    The key is the run's idempotency key: Prefect answers a second creation with the same key (a client's retry after
    a lost answer, or the caller's) with the run already created. So an overloaded server that answers 503 after it
    created the run costs nothing: the creation is asked again, for up to `patience` seconds, and finds that run.

    Raises:
        KeyReused: a run was created with this key for other arguments.
        PrefectHTTPStatusError: the server refused the run (4xx), or still did not answer after `patience` seconds.
        httpx.TransportError: likewise, when it could not be reached.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            flow_run = client.create_flow_run_from_deployment(
                deployment_id, parameters=arguments, tags=tags, name=name, idempotency_key=key
            )
            break
        except PrefectHTTPStatusError as err:
            if err.response.status_code < 500 or time.monotonic() > deadline:
                raise
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)
    given = flow_run.parameters or {}
    if {name: given.get(name) for name in arguments} != arguments:
        raise KeyReused(f"the key {key.rsplit(':', 1)[-1]!r} was used for another execution, {flow_run.id}")
    return flow_run


class KeyReused(GranaryError):
    """An idempotency key already named an execution with other arguments."""


@contextmanager
def refusals_said(what: str) -> Iterator[None]:
    """A request the server answered with an error becomes a GranaryError with the server's own reasons (a 409's
    first violation, a 422's details), never "did not answer"."""
    try:
        yield
    except PrefectHTTPStatusError as err:
        raise GranaryError(f"{what} ({err.response.status_code}): {server_reason(err.response)}") from err


def server_reason(response: Any) -> str:
    """What a Prefect server said about a refused request."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("exception_detail") or body.get("exception_message")
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}" if isinstance(item, dict) else str(item)
                for item in detail
            )[:1000]
        if detail:
            return str(detail)[:1000]
    return str(body)[:500]


def read_execution(client: SyncPrefectClient, execution_id: str) -> FlowRun:
    """The flow run of an execution.

    Raises:
        GranaryError: when there is no such execution on this server.
    """
    try:
        return client.read_flow_run(UUID(execution_id))
    except (ObjectNotFound, ValueError) as err:
        raise GranaryError(f"no execution {execution_id!r} on this Prefect server") from err


def resume(
    client: SyncPrefectClient, execution_id: str, definition: Definition | None, changes: dict[str, Any]
) -> FlowRun:
    """Run a failed execution again, or a new one with `changes` to its arguments that reuses what it can.

    Without changes the execution itself is scheduled again (as the UI's Retry and `prefect flow-run retry` do), and
    a pipeline reruns only its failed and not-yet-run steps. With changes, a new run of the same deployment is
    created, tagged `resumes:<execution_id>`; a pipeline reuses every step whose task version and resolved
    arguments are unchanged.

    Raises:
        GranaryError: the execution does not exist, has not ended, completed with nothing to change, or the changed
            arguments are invalid (checked here, before anything is created).
    """
    from granary_flows.pipeline_run import RESUMES_TAG

    flow_run = read_execution(client, execution_id)
    state = flow_run.state
    if state is None or not state.is_final():
        now = (state.name or state.type.value).lower() if state else "unknown"
        raise GranaryError(f"execution {execution_id} is still {now}: it can be resumed once it has ended")
    if flow_run.deployment_id is None:
        raise GranaryError(f"execution {execution_id} did not run from a deployment, so it cannot be resumed")
    if not changes:
        if state.is_completed():
            raise GranaryError(
                f"execution {execution_id} completed: there is nothing to resume; give -p NAME=VALUE to rerun it "
                "with changed arguments, reusing what they do not change"
            )
        client.set_flow_run_state(flow_run.id, Scheduled(message="resumed by granary resume"), force=True)
        return client.read_flow_run(flow_run.id)
    arguments = {k: v for k, v in flow_run.parameters.items() if v is not None} | changes
    if definition is not None:
        validate(definition, arguments)
    tags = [tag for tag in flow_run.tags if not tag.startswith(RESUMES_TAG)] + [f"{RESUMES_TAG}{execution_id}"]
    with refusals_said(f"the Prefect server refused to resume execution {execution_id}"):
        return client.create_flow_run_from_deployment(flow_run.deployment_id, parameters=arguments, tags=tags)


def watch(
    client: SyncPrefectClient,
    flow_run_id: UUID,
    on_state: Callable[[str, str | None], None],
    on_log: Callable[[Log], None],
    interval: float = 0.5,
    log_grace: float = 3.0,
    since: datetime | None = None,
) -> FlowRun:
    """Follow a flow run to a final state, reporting each state change once and each log line once, in order.

    Prefect ships logs in batches (every 2 s by default), so after the final state it keeps reading for
    `log_grace` seconds without a new line before it returns. With `since`, earlier log lines are left out.
    """
    seen_state: tuple[str, str | None] | None = None
    seen_logs: set[UUID] = set()
    quiet_since = None
    while True:
        flow_run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=200,
            offset=len(seen_logs),
        )
        fresh = [log for log in logs if log.id not in seen_logs]
        for log in fresh:
            seen_logs.add(log.id)
            if since is None or log.timestamp >= since:  # a resumed run's earlier attempts are not news
                on_log(log)
        state = flow_run.state
        if state and (state.name or state.type.value, state.message) != seen_state:
            seen_state = (state.name or state.type.value, state.message)
            on_state(*seen_state)
        if state and state.is_final():
            quiet_since = time.monotonic() if fresh or quiet_since is None else quiet_since
            if time.monotonic() - quiet_since >= log_grace:
                return flow_run
        time.sleep(interval)


def results_document(
    client: SyncPrefectClient, execution_id: str, store: ResultsStore | None = None
) -> ResultsDocument:
    """The results document of an execution, read from the results store.

    Raises:
        GranaryError: naming the execution when it does not exist or has no results yet.
    """
    flow_run = read_execution(client, execution_id)
    task = client.read_flow(flow_run.flow_id).name
    state = flow_run.state.name if flow_run.state else "unknown"
    if flow_run.state is None or not flow_run.state.is_completed():
        message = flow_run.state.message if flow_run.state else None
        raise GranaryError(
            f"execution {execution_id} of {task} is {state}: it has no results" + (f" ({message})" if message else "")
        )
    store = store or ResultsStore()
    try:
        return read_results(store, task, execution_id)
    except FileNotFoundError:
        pass
    try:  # the runner may use another results root; the document is also the run's persisted return value
        return parse_results(flow_run.state.result())
    except Exception as err:
        raise GranaryError(
            f"execution {execution_id} of {task} has no results document under {store.root}, and its persisted "
            "result cannot be read here: set GRANARY_RESULTS_URI (or GRANARY_RESULTS_BLOCK) to the runner's root"
        ) from err
