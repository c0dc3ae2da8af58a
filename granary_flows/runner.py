"""Runs granary flow runs as threads of one long-lived process: about 0.5 s a run, where Prefect's own runner,
which starts a Python interpreter per flow run, takes about 3 s (measured in `bench/worker.py`).

Since the real work happens in containers, the flow body is thin and threads are enough. What Prefect does not do
in-process, this runner does: it claims each run under its own name, cancels a run's token and stops its containers
when the run is cancelled, fails a run it cannot execute instead of leaving it pending, and at start-up settles the
runs, containers and work folders that a runner which died left behind. Which deployments it serves, and with which
definition, is a `Catalog`: the registry in Prefect (`granary serve`, `granary worker`), or a fixed set (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import certifi
import httpx
from prefect import Flow, State
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import SettingsContext, get_settings_context
from prefect.events import emit_event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import Abort, ObjectNotFound, PrefectHTTPStatusError
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.flow_engine import run_flow
from prefect.logging.loggers import flow_run_logger
from prefect.results import get_default_result_storage
from prefect.settings import (
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_CLIENT_CSRF_SUPPORT_ENABLED,
    PREFECT_CLIENT_CUSTOM_HEADERS,
    PREFECT_CLIENT_MAX_RETRIES,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect.states import Cancelled, Crashed, Failed, Pending, Scheduled
from prefect.utilities.engine import propose_state_sync

from granary_flows import prefect_internals
from granary_flows.allocator import fix_malloc_thresholds
from granary_flows.cancellation import CancelToken, running_with
from granary_flows.catalog import Catalog
from granary_flows.definition import RuntimeKind
from granary_flows.due_runs import DueRuns
from granary_flows.flows import flow_for
from granary_flows.loading import Definition
from granary_flows.restarts import CLAIM
from granary_flows.runtimes.base import Runtime
from granary_flows.store import ResultsStore
from granary_flows.validation import INT64, unstorable

logger = logging.getLogger("granary.runner")
WATCH_INTERVAL = 0.1  # how often the loop looks at what changed
# In-flight runs are looked at for a cancellation this often while the event stream is down; while it is up, its
# Cancelling events say at once, and this look is only a fallback.
CANCEL_CHECK = 0.5
CANCEL_CHECK_WITH_EVENTS = 5.0
HEARTBEAT_INTERVAL = 30.0  # a work-pool worker's heartbeat, which shows it online in the UI
# The server's events for a run that became due: each wakes the runner at once, rather than at its next poll.
DUE_EVENTS = ["prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry"]
CANCELLING_EVENT = "prefect.flow-run.Cancelling"
POLL_WITH_EVENTS = 5.0
MIN_POLL_GAP = 0.25  # a burst of due events (a hundred runs created at once) wakes at most one look per gap
ADOPT_INTERVAL = 10.0  # how often the runner looks for claims of its own whose answer it lost


class InProcessRunner:
    """Polls for due runs of its deployments, claims each and runs it in a thread pool.

    Args:
        catalog: the deployments it serves and their definitions; runs of others are left for other workers.
        store: the results store its runs use.
        runtimes: one per kind of task; also used to stop the containers and jobs of cancelled runs.
        runner_id: carried by every container this runner starts and by every claim it makes (`new_runner_id()`).
        limit: how many runs at once.
        poll_interval: seconds between looks for due runs while the event stream is down (while it is up, its events
            say when a run falls due, and a look every POLL_WITH_EVENTS seconds is the fallback).
        work_pool: poll this work pool (as `granary worker --pool` does) rather than the deployments themselves.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: ResultsStore,
        runtimes: dict[RuntimeKind, Runtime],
        runner_id: str,
        limit: int = 8,
        poll_interval: float = 1.0,
        work_pool: str | None = None,
    ):
        self.catalog = catalog
        self.store = store
        self.runtimes = runtimes
        self.runner_id = runner_id
        self.limit = limit
        self.poll_interval = poll_interval
        self.work_pool = work_pool
        self.in_flight: dict[UUID, Any] = {}
        self.tokens: dict[UUID, CancelToken] = {}
        self._flows: dict[str, Any] = {}  # a definition (as JSON) -> its flow, built once
        self._lock = threading.Lock()
        self._hurry = threading.Event()
        self._wake = threading.Event()  # something below changed: the loop looks now, not at its next tick
        self._told_due = threading.Event()  # the server said a run became due
        self._freed = threading.Event()  # a run ended: a place is free
        self._told_cancelling = threading.Event()  # the server said a run in flight is being cancelled
        self._events_up = False  # the event stream is connected
        self._due = DueRuns()
        self._server_away = False
        self._claims_unsure = threading.Event()  # a claim's answer was lost: the server may hold it as ours
        self.heartbeat_seconds = get_current_settings().flows.heartbeat_frequency
        self._run_settings: dict[str, Any] = {}  # built when serving starts: it asks the server one thing
        self._run_tls: ssl.SSLContext | None = None  # built from those settings, once
        self._result_storage: WritableFileSystem | Path | None = None  # Prefect's default, resolved once

    @property
    def claim_message(self) -> str:
        return CLAIM + self.runner_id

    def serve(self, stop: threading.Event, drain: bool = False) -> None:
        """Run until `stop` is set; then cancel in-flight runs, or with `drain` let them finish (until `hurry()`)."""
        prefect_internals.check()
        prefect_internals.skip_suspension_watch()
        fix_malloc_thresholds()  # a process that runs thousands of executions: its memory must not creep
        self._run_settings = _settings_for_runs(csrf=_server_checks_csrf())  # the runs' own, not this loop's below
        self._run_tls = _tls_context(self._run_settings["settings"])
        with SettingsContext(**self._run_settings):  # once, rather than the engine asking the server at every run
            storage = cast(WritableFileSystem, get_default_result_storage(_sync=True))  # type: ignore[call-arg]
        # A block a flow is given must be saved: the local default (unsaved) is given as its folder.
        self._result_storage = storage
        if isinstance(storage, LocalFileSystem) and storage._block_document_id is None:
            self._result_storage = Path(str(storage.basepath))
        # This loop's own calls give up quickly while the server is away, so that it stays responsive to signals and
        # says it is waiting; the runs' threads keep Prefect's patient retries (their settings are not this context's).
        with (
            temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1, PREFECT_CLIENT_CUSTOM_HEADERS: uncompressed()}),
            get_client(sync_client=True) as client,
            ThreadPoolExecutor(self.limit, "granary-run") as pool,
        ):
            threading.Thread(target=self._listen_for_due_runs, args=(stop,), daemon=True, name="granary-due").start()
            next_poll = next_check = next_heartbeat = last_told = last_run_heartbeat = next_adopt = 0.0
            while not stop.is_set():
                self._wake.clear()
                now = time.monotonic()
                if self.work_pool and now >= next_heartbeat:
                    next_heartbeat = now + HEARTBEAT_INTERVAL
                    self._attempt(client.send_worker_heartbeat, self.work_pool, self.runner_id, HEARTBEAT_INTERVAL)
                if self.heartbeat_seconds and now - last_run_heartbeat >= self.heartbeat_seconds:
                    last_run_heartbeat = now
                    self._send_run_heartbeats()
                told = self._told_due.is_set() and now - last_told >= MIN_POLL_GAP
                if told or now >= next_poll or self._due.came_due():
                    if told:
                        self._told_due.clear()
                        last_told = now
                    self._freed.clear()
                    next_poll = now + self._poll_every()
                    self._attempt(self._claim_due_runs, client, pool, True)
                elif self._freed.is_set():
                    self._freed.clear()
                    self._attempt(self._claim_due_runs, client, pool, False)
                if now >= next_check or self._told_cancelling.is_set():
                    self._told_cancelling.clear()
                    next_check = now + (CANCEL_CHECK_WITH_EVENTS if self._events_up else CANCEL_CHECK)
                    self._attempt(self._stop_cancelling_runs, client)
                if now >= next_adopt or self._claims_unsure.is_set():
                    next_adopt = now + ADOPT_INTERVAL
                    self._claims_unsure.clear()
                    self._attempt(self._adopt_lost_claims, client, pool)
                self._wake.wait(WATCH_INTERVAL)
            if drain and self.in_flight:
                logger.info("draining: waiting for %d run(s); interrupt again to cancel them", len(self.in_flight))
            while drain and self.in_flight and not self._hurry.is_set():
                self._attempt(self._stop_cancelling_runs, client)
                self._hurry.wait(CANCEL_CHECK)
            for flow_run_id in list(self.in_flight):
                self._cancel(flow_run_id, "the runner is stopping")

    def hurry(self) -> None:
        """Stop draining: cancel the runs still in flight."""
        self._hurry.set()

    def _listen_for_due_runs(self, stop: threading.Event) -> None:
        """Wake the loop when the server says a run of a deployment became due, or a run in flight is being
        cancelled: ~30 ms instead of up to a poll. Polling goes on regardless, more often while the event stream is
        unavailable, when it is all there is."""
        names = EventNameFilter(name=[*DUE_EVENTS, CANCELLING_EVENT])

        async def listen() -> None:
            async with get_events_subscriber(filter=EventFilter(event=names)) as events:
                self._events_up = True
                async for event in events:
                    if event.event == CANCELLING_EVENT:
                        run = event.resource.id.removeprefix("prefect.flow-run.")
                        if any(str(flow_run_id) == run for flow_run_id in list(self.in_flight)):
                            self._told_cancelling.set()
                            self._wake.set()
                    elif any(related.id.startswith("prefect.deployment.") for related in event.related):
                        self._told_due.set()
                        self._wake.set()

        while not stop.is_set():
            try:
                asyncio.run(listen())
            except Exception as err:  # a server away, or one without an event stream
                logger.debug("the event stream is unavailable (%s); polling only", err)
            self._events_up = False
            stop.wait(5)

    def _attempt(self, call: Any, *arguments: Any) -> None:
        """Call the server; while it is away, say so once and keep the runner going. Anything else that fails is a
        fault of the runner's own, logged with its traceback each time, and the loop goes on."""
        try:
            call(*arguments)
        except Exception as err:
            if not server_away(err):
                logger.exception("the runner's %s failed", getattr(call, "__name__", "call"))
                return
            if not self._server_away:
                logger.warning("the Prefect server did not answer (%s); waiting for it", err)
            self._server_away = True
            return
        if self._server_away:
            logger.info("the Prefect server answers again")
            self._server_away = False

    def _claim_due_runs(self, client: SyncPrefectClient, pool: ThreadPoolExecutor, look: bool) -> None:
        """Claim due runs while there is a free place. With `look` (a run became due, or the poll interval passed),
        the server is asked first; otherwise (a place came free) the runs the last look found due are taken, and the
        server is asked only when it had more."""
        if len(self.in_flight) >= self.limit:
            return  # no place: the next look is when one frees up
        if look or self._due.stale(self.poll_interval):
            self._look(client)
        looked_again = False
        while len(self.in_flight) < self.limit:
            flow_run = self._due.next()
            if flow_run is None:
                if looked_again or not self._due.more:
                    return
                self._look(client)
                looked_again = True
                continue
            if flow_run.id in self.in_flight or flow_run.deployment_id is None:
                continue
            definition = self.catalog.definition_for(client, flow_run)
            if definition is None:
                continue  # a run of a deployment this runner does not serve is left for the worker that does
            claimed = self._claim(client, flow_run)
            if claimed is None:
                continue
            with self._lock:
                self.in_flight[claimed.id] = claimed
                self.tokens[claimed.id] = CancelToken()
            pool.submit(self._execute, claimed, definition)

    def _poll_every(self) -> float:
        return max(self.poll_interval, POLL_WITH_EVENTS) if self._events_up else self.poll_interval

    def _look(self, client: SyncPrefectClient) -> None:
        """Ask the server for the runs due now and those due before the next poll (whose time then wakes the
        loop), twice as many as this runner runs at once: the places that free up next are filled without asking."""
        now = datetime.now(timezone.utc)
        before = now + timedelta(seconds=self._poll_every())
        asked = 2 * self.limit
        if self.work_pool:
            answer = client.request(
                "POST",
                "/work_pools/{name}/get_scheduled_flow_runs",
                path_params={"name": self.work_pool},
                json={"scheduled_before": before.isoformat(), "limit": asked},
            )
            answer.raise_for_status()
            runs: list[Any] = [FlowRun.model_validate(found["flow_run"]) for found in answer.json()]
        else:
            served = self.catalog.deployment_ids(client)
            runs = (
                client.get_scheduled_flow_runs_for_deployments(served, scheduled_before=before, limit=asked)
                if served
                else []
            )
        self._due.found(runs, asked, now)

    def _claim(self, client: SyncPrefectClient, flow_run: Any) -> FlowRun | None:
        """Propose Pending, signed with this runner's id; the server lets one claimer through. Returns the run as
        claimed (Pending), which its execution starts from without reading it again, or None."""
        try:
            state = propose_state_sync(client, Pending(message=self.claim_message), flow_run_id=flow_run.id)
        except Abort:  # a BaseException, as Prefect's signals are
            # Either another runner was first, or the server took our claim but its answer was lost and the client
            # sent it again: then the run is Pending under our name, and ours.
            current = client.read_flow_run(flow_run.id)
            found = current.state
            ours = found is not None and found.is_pending() and found.message == self.claim_message
            return current if ours else None
        except ObjectNotFound:  # deleted since it was found due
            return None
        except Exception:
            self._claims_unsure.set()  # the server may have taken it: `_adopt_lost_claims` will see
            raise
        if not state.is_pending():
            return None
        claimed = {"state": state, "state_id": state.id, "state_type": state.type, "state_name": state.name}
        return FlowRun.model_validate(flow_run, from_attributes=True).model_copy(update=claimed)

    def _adopt_lost_claims(self, client: SyncPrefectClient, pool: ThreadPoolExecutor) -> None:
        """Runs Pending under this runner's own claim that it is not running: the server took a claim whose answer
        was lost (it answered 503 or the connection broke after it committed), or an execution failed before it
        started. Each is run now, once; with no free place, given back (Scheduled) for any runner to take. Without
        this, such a run would wait for a restart of the runner."""
        pending = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING])))
        scope: dict[str, Any] = {}
        if self.work_pool:
            scope["work_pool_filter"] = WorkPoolFilter(name=WorkPoolFilterName(any_=[self.work_pool]))
        else:
            served = self.catalog.deployment_ids(client)
            if not served:
                return
            scope["deployment_filter"] = DeploymentFilter(id=DeploymentFilterId(any_=served))
        for flow_run in client.read_flow_runs(flow_run_filter=pending, limit=200, **scope):
            ours = flow_run.state is not None and flow_run.state.message == self.claim_message
            if not ours or flow_run.id in self.in_flight:
                continue
            definition = self.catalog.definition_for(client, flow_run)
            if definition is None or len(self.in_flight) >= self.limit:
                client.set_flow_run_state(flow_run.id, Scheduled(message="given back by its runner"), force=True)
                continue
            logger.info("flow run %s was claimed but its claim's answer was lost: running it now", flow_run.id)
            with self._lock:
                self.in_flight[flow_run.id] = flow_run
                self.tokens[flow_run.id] = CancelToken()
            pool.submit(self._execute, flow_run, definition)

    def _send_run_heartbeats(self) -> None:
        """Prefect's flow-run heartbeats (which let the server notice a run whose process died), for every run in
        flight, from this one thread: the engine's own heartbeat thread holds each run's thread up to a second."""
        for flow_run in list(self.in_flight.values()):
            emit_event(
                event="prefect.flow-run.heartbeat",
                resource={
                    "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                    "prefect.resource.name": flow_run.name or "",
                },
                related=[{"prefect.resource.id": f"prefect.flow.{flow_run.flow_id}", "prefect.resource.role": "flow"}],
            )

    def _flow(self, definition: Definition) -> Flow[..., Any]:
        """The flow of a definition as it is registered now, built once per distinct definition."""
        key = definition.model_dump_json()
        with self._lock:
            if key not in self._flows:
                self._flows[key] = flow_for(definition, self.store, self.runtimes, self.runner_id, self._result_storage)
            return self._flows[key]

    def _execute(self, flow_run: FlowRun, definition: Definition) -> None:
        flow_run_id = flow_run.id
        token = self.tokens[flow_run_id]
        try:
            # One client for the run, which the flow and task engines and the artifacts find in the context instead of
            # building theirs (a client loads the CA bundle: a fifth of the runner's CPU in a profile).
            with (
                SettingsContext(**self._run_settings),
                prefect_internals.run_client_context(self._run_tls) as context,
            ):
                client = context.client
                refused = _unrunnable(flow_run, definition.argument_names)
                if refused:  # the flow could not even be called: fail the run rather than leave it pending
                    _defuse(client, flow_run)
                    client.set_flow_run_state(flow_run_id, Failed(message=refused), force=True)
                    return
                with running_with(token), prefect_internals.granary_run():
                    state = cast(State[Any], run_flow(self._flow(definition), flow_run=flow_run, return_type="state"))
                if token.cancelled and not (state.is_completed() or state.is_cancelled()):  # ended before the cancel
                    client.set_flow_run_state(
                        flow_run_id, Cancelled(message=f"{token.reason}; its containers were stopped"), force=True
                    )
                elif not state.is_final():
                    client.set_flow_run_state(flow_run_id, Crashed(message=f"the run ended {state.name}"), force=True)
        except Exception as err:  # a crash of one run must not stop the runner, nor leave the run waiting
            logger.exception("flow run %s crashed in the runner", flow_run_id)
            with contextlib.suppress(Exception), get_client(sync_client=True) as client:
                current = client.read_flow_run(flow_run_id).state
                if current is None or not current.is_final():
                    client.set_flow_run_state(
                        flow_run_id, Crashed(message=f"the runner could not run it: {err}"), force=True
                    )
        finally:
            with self._lock:
                self.in_flight.pop(flow_run_id, None)
                self.tokens.pop(flow_run_id, None)
            self._freed.set()  # a free place: take a run that was waiting for one
            self._wake.set()

    def _stop_cancelling_runs(self, client: SyncPrefectClient) -> None:
        ids = [i for i, token in list(self.tokens.items()) if not token.cancelled]
        if not ids:
            return
        cancelling = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
            ),
            sort=FlowRunSort.ID_DESC,
            limit=len(ids),
        )
        for flow_run in cancelling:
            self._cancel(flow_run.id, "cancellation was requested")

    def _cancel(self, flow_run_id: UUID, why: str) -> None:
        # In the run's own logs, where a user looking at the cancelled run reads why it ended (before the run's
        # own last line, which says it ended Cancelled).
        flow_run_logger(flow_run_id=flow_run_id).info("%s: stopping its containers and jobs", why)
        token = self.tokens.get(flow_run_id)
        if token is not None:  # first: the execution knows it was cancelled before it sees its container end
            token.cancel(why)
        for runtime in self.runtimes.values():  # and whatever the token's own callbacks did not reach
            runtime.stop(str(flow_run_id), started_elsewhere=False)


def server_away(err: BaseException) -> bool:
    """Whether an error is a Prefect server that is away, restarting or overloaded (which the runner waits out), as
    opposed to a fault of the runner's own or a request the server refuses.

    Example:
        >>> server_away(httpx.ConnectError("refused")), server_away(TypeError("a bug"))
        (True, False)
    """
    if isinstance(err, httpx.HTTPStatusError):
        return err.response.status_code >= 500 or err.response.status_code in (408, 429)
    return isinstance(err, (httpx.TransportError, OSError))


def _unrunnable(flow_run: Any, names: list[str]) -> str | None:
    """Why a run's parameters cannot even reach its flow: arguments it does not take, or values Prefect's
    database cannot hold."""
    parameters = flow_run.parameters or {}
    unknown = sorted(set(parameters) - set(names))
    if unknown:
        takes = ", ".join(names) or "no arguments"
        return f"unknown argument(s) {', '.join(map(repr, unknown))} (the task takes: {takes})"
    refused = unstorable(parameters, "$")
    return "; ".join(refused) if refused else None


def _defuse(client: SyncPrefectClient, flow_run: Any) -> None:
    """Numbers larger than 64 bits make the server's run listings fail (500) for as long as the run exists: keep
    them as text."""

    def as_text(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64:
            return str(value)
        if isinstance(value, dict):
            return {key: as_text(item) for key, item in value.items()}
        if isinstance(value, list):
            return [as_text(item) for item in value]
        return value

    parameters = as_text(flow_run.parameters or {})
    if parameters != (flow_run.parameters or {}):
        client.update_flow_run(flow_run.id, parameters=parameters)


def _server_checks_csrf() -> bool:
    """Whether the server asks clients for CSRF tokens. Each new client asks the server once and learns that it does
    not (an extra round trip and a failed request for every run, a fifth of a request's CPU in a profile): asked
    once here instead."""
    try:
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1}), get_client(sync_client=True) as client:
            client.request("GET", "/csrf-token", params={"client": f"granary-{uuid4()}"})
    except PrefectHTTPStatusError as err:
        return not (err.response.status_code == 404 or "CSRF protection is disabled." in err.response.text)
    except Exception:  # the server is away: let each client find out, as Prefect's own do
        return True
    return True


def _tls_context(settings: Any) -> ssl.SSLContext:
    """The TLS context Prefect's client would build from `settings`, built once for all runs."""
    if settings.api.tls_insecure_skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=settings.api.ssl_cert_file or certifi.where())


def _settings_for_runs(csrf: bool) -> dict[str, Any]:
    """The settings runs execute with, built once (building Settings reads the whole environment, ~50 ms).

    Without the engine's own heartbeat thread, which holds a run's thread up to a second after the run ends (the
    runner sends the heartbeats); and, for a plain-http server, without certificate checks, since no TLS is used to
    verify anything (`_tls_context` then loads no certifi bundle).
    """
    current = get_settings_context()
    updates: dict[Any, Any] = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_CLIENT_CSRF_SUPPORT_ENABLED: csrf,
        PREFECT_CLIENT_CUSTOM_HEADERS: uncompressed(),
    }
    if (current.settings.api.url or "").startswith("http://"):
        updates[PREFECT_API_TLS_INSECURE_SKIP_VERIFY] = True
    with temporary_settings(updates=updates) as settings:
        pass
    # A context per run, from these: one context object entered by several threads would mix up their tokens.
    return {"profile": current.profile, "settings": settings}


def uncompressed() -> dict[str, str]:
    """The client's headers, asking for answers as they are: the server would spend CPU compressing each for a
    client on the same network that saves nothing by it."""
    return {**get_current_settings().client.custom_headers, "Accept-Encoding": "identity"}
