"""Runs granary flow runs as threads of one long-lived process (see shared notes: ~0.5 s a run, not ~3 s).

Prefect's own runner starts an interpreter per flow run; since the real work happens in containers, the flow body
is thin and threads are enough. What Prefect does not do in-process, this runner does: it watches its runs for
cancellation and stops their containers, it claims each run under its own name, and at start-up it settles the runs
and containers that a runner which died left behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, NamedTuple
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import SettingsContext, get_settings_context
from prefect.events import emit_event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flow_engine import run_flow
from prefect.logging.loggers import flow_run_logger
from prefect.settings import (
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_CLIENT_MAX_RETRIES,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect.states import Cancelled, Crashed, Pending, Scheduled
from prefect.utilities.engine import propose_state_sync

from granary_flows.execution import cancel_requested
from granary_flows.runtimes.base import Runtime

logger = logging.getLogger("granary.runner")
WATCH_INTERVAL = 0.1  # how often in-flight runs are checked for cancellation, at most every CANCEL_CHECK seconds
CANCEL_CHECK = 0.5
HEARTBEAT_INTERVAL = 30.0  # a work-pool worker's heartbeat, which shows it online in the UI
CLAIM = "claimed by granary runner "
# The server's events for a run that became due: each wakes the runner at once, rather than at its next poll.
DUE_EVENTS = ["prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry"]
MIN_POLL_GAP = 0.02


_started_here: set[str] = set()


def new_runner_id() -> str:
    """`host:pid:nonce`: enough to tell, on the same host, whether the runner that started a container is alive."""
    runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _started_here.add(runner_id)
    return runner_id


class InProcessRunner:
    """Polls for due runs of its deployments, claims each and runs it in a thread pool.

    Args:
        flows: deployment id -> the flow to run for it. Runs of other deployments are left for other workers.
        runtimes: the runtimes its flows use, to stop the containers and jobs of cancelled runs.
        runner_id: carried by every container this runner starts and by every claim it makes (`new_runner_id()`).
        limit: how many runs at once.
        poll_interval: seconds between looks for due runs.
        work_pool: poll this work pool (as `granary worker --pool` does) rather than the deployments themselves.
    """

    def __init__(
        self,
        flows: dict[UUID, Flow[..., Any]],
        runtimes: list[Runtime],
        runner_id: str,
        limit: int = 8,
        poll_interval: float = 1.0,
        work_pool: str | None = None,
    ):
        self.flows = flows
        self.runtimes = runtimes
        self.runner_id = runner_id
        self.limit = limit
        self.poll_interval = poll_interval
        self.work_pool = work_pool
        self.in_flight: dict[UUID, Any] = {}
        self._lock = threading.Lock()
        self._hurry = threading.Event()
        self._wake = threading.Event()
        self._server_away = False
        self.heartbeat_seconds = get_current_settings().flows.heartbeat_frequency
        self._run_settings = _settings_for_runs()

    @property
    def claim_message(self) -> str:
        return CLAIM + self.runner_id

    def serve(self, stop: threading.Event, drain: bool = False) -> None:
        """Run until `stop` is set; then cancel in-flight runs, or with `drain` let them finish (until `hurry()`)."""
        # This loop's own calls give up quickly while the server is away, so that it stays responsive to signals and
        # says it is waiting; the runs' threads keep Prefect's patient retries (their settings are not this context's).
        with (
            temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1}),
            get_client(sync_client=True) as client,
            ThreadPoolExecutor(self.limit, "granary-run") as pool,
        ):
            threading.Thread(target=self._listen_for_due_runs, args=(stop,), daemon=True, name="granary-due").start()
            next_poll = next_check = next_heartbeat = last_poll = last_run_heartbeat = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if self.work_pool and now >= next_heartbeat:
                    next_heartbeat = now + HEARTBEAT_INTERVAL
                    self._attempt(client.send_worker_heartbeat, self.work_pool, self.runner_id, HEARTBEAT_INTERVAL)
                if self.heartbeat_seconds and now - last_run_heartbeat >= self.heartbeat_seconds:
                    last_run_heartbeat = now
                    self._send_run_heartbeats()
                if (self._wake.is_set() and now - last_poll >= MIN_POLL_GAP) or now >= next_poll:
                    self._wake.clear()
                    last_poll, next_poll = now, now + self.poll_interval
                    self._attempt(self._claim_due_runs, client, pool)
                if now >= next_check:
                    next_check = now + CANCEL_CHECK
                    self._attempt(self._stop_cancelling_runs, client)
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
        """Wake the loop when the server says one of its deployments has a new due run: ~30 ms instead of up to a
        poll interval. Polling goes on regardless; while the event stream is unavailable it is all there is."""
        served = {f"prefect.deployment.{deployment_id}" for deployment_id in self.flows}

        async def listen() -> None:
            async with get_events_subscriber(filter=EventFilter(event=EventNameFilter(name=DUE_EVENTS))) as events:
                async for event in events:
                    if any(related.id in served for related in event.related):
                        self._wake.set()

        while not stop.is_set():
            try:
                asyncio.run(listen())
            except Exception as err:  # a server away, or one without an event stream
                logger.debug("the event stream is unavailable (%s); polling only", err)
            stop.wait(5)

    def _attempt(self, call: Any, *arguments: Any) -> None:
        """Call the server; while it is away, say so once and keep the runner going."""
        try:
            call(*arguments)
        except Exception as err:
            if not self._server_away:
                logger.warning("the Prefect server did not answer (%s); waiting for it", err)
            self._server_away = True
            return
        if self._server_away:
            logger.info("the Prefect server answers again")
            self._server_away = False

    def _claim_due_runs(self, client: SyncPrefectClient, pool: ThreadPoolExecutor) -> None:
        free = self.limit - len(self.in_flight)
        if free <= 0:
            return
        for flow_run in self._due_runs(client, free):
            if len(self.in_flight) >= self.limit:
                return
            if flow_run.id in self.in_flight or flow_run.deployment_id not in self.flows:
                continue  # a run of a deployment this runner does not serve is left for the worker that does
            if not self._claim(client, flow_run):
                continue
            with self._lock:
                self.in_flight[flow_run.id] = flow_run
            pool.submit(self._execute, flow_run.id, self.flows[flow_run.deployment_id])

    def _due_runs(self, client: SyncPrefectClient, limit: int) -> list[Any]:  # FlowRun or the server's FlowRunResponse
        now = datetime.now(timezone.utc)
        if self.work_pool:
            return [r.flow_run for r in client.get_scheduled_flow_runs_for_work_pool(self.work_pool, None, now)]
        return client.get_scheduled_flow_runs_for_deployments(list(self.flows), scheduled_before=now, limit=limit)

    def _claim(self, client: SyncPrefectClient, flow_run: Any) -> bool:
        """Propose Pending, signed with this runner's id; the server lets one claimer through."""
        try:
            state = propose_state_sync(client, Pending(message=self.claim_message), flow_run_id=flow_run.id)
        except Abort:
            # Either another runner was first, or the server took our claim but its answer was lost and the client
            # sent it again: then the run is Pending under our name, and ours.
            current = client.read_flow_run(flow_run.id).state
            return current is not None and current.is_pending() and current.message == self.claim_message
        return state.is_pending()

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

    def _execute(self, flow_run_id: UUID, flow: Flow[..., Any]) -> None:
        try:
            with SettingsContext(**self._run_settings), get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(flow_run_id)
                run_flow(flow, flow_run=flow_run, return_type="state")
                if str(flow_run_id) in cancel_requested:
                    client.set_flow_run_state(
                        flow_run_id, Cancelled(message="cancelled; its container was stopped"), force=True
                    )
        except Exception:  # a crash of one run must not stop the runner
            logger.exception("flow run %s crashed in the runner", flow_run_id)
        finally:
            cancel_requested.discard(str(flow_run_id))
            with self._lock:
                self.in_flight.pop(flow_run_id, None)
            self._wake.set()  # a free slot: look for runs that were waiting for one

    def _stop_cancelling_runs(self, client: SyncPrefectClient) -> None:
        ids = [i for i in self.in_flight if str(i) not in cancel_requested]
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
        cancel_requested.add(str(flow_run_id))
        stopped = sum(runtime.stop(str(flow_run_id)) for runtime in self.runtimes)
        # In the run's own logs, where a user looking at the cancelled run reads why it ended.
        flow_run_logger(flow_run_id=flow_run_id).info("%s; stopped %d container(s) or job(s)", why, stopped)


def _settings_for_runs() -> dict[str, Any]:
    """The settings runs execute with, built once (building Settings reads the whole environment, ~50 ms).

    Without the engine's own heartbeat thread, which holds a run's thread up to a second after the run ends (the
    runner sends the heartbeats); and, for a plain-http server, without loading a CA bundle for every client the
    engine creates (~20 ms each), since no TLS is used to verify anything.
    """
    current = get_settings_context()
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if (current.settings.api.url or "").startswith("http://"):
        updates[PREFECT_API_TLS_INSECURE_SKIP_VERIFY] = True
    # A context per run, from these: one context object entered by several threads would mix up their tokens.
    return {"profile": current.profile, "settings": current.settings.copy_with_update(updates=updates)}


class Settled(NamedTuple):
    """What `reconcile` did with one execution."""

    action: str  # crashed, rescheduled, cancelled, or found (its run was gone or already final)
    execution_id: str
    reason: str


def reconcile(client: SyncPrefectClient, runtimes: list[Runtime], deployment_ids: list[UUID]) -> list[Settled]:
    """Settle what runners on this host that died left behind, before a new runner starts.

    - A container is removed and its run marked Crashed: nobody collected what it wrote.
    - A Batch job goes on; its run is scheduled again, and running it re-attaches to the job.
    - A run that a dead runner had claimed but not started is scheduled again; one it was running, Crashed.

    Returns:
        One `Settled` per execution found.
    """
    settled = []
    for runtime in runtimes:
        for orphan in runtime.orphans(_is_dead):
            if orphan.resumable:
                state: Any = Scheduled(message=f"{orphan.what}; re-attaching")
            else:
                state = Crashed(message=orphan.what)
            if _settle(client, orphan.execution_id, state):
                settled.append(Settled(_verb(state), orphan.execution_id, state.message))
            else:  # its run is gone or already final: only the container or job was left to deal with
                settled.append(Settled("found", orphan.execution_id, orphan.what))
    for flow_run in _unfinished_runs(client, deployment_ids):
        claimer = _claimer(client, flow_run.id)
        if claimer is None or not _is_dead(claimer):
            continue
        assert flow_run.state is not None
        if flow_run.state.is_pending():
            state = Scheduled(message=f"runner {claimer} stopped before starting it; scheduled again")
        elif flow_run.state.type == StateType.CANCELLING:
            state = Cancelled(message=f"runner {claimer} stopped while it was being cancelled")
        else:
            state = Crashed(message=f"runner {claimer} stopped while it ran")
        client.set_flow_run_state(flow_run.id, state, force=True)
        settled.append(Settled(_verb(state), str(flow_run.id), state.message))
    return settled


def _settle(client: SyncPrefectClient, execution_id: str, state: Any) -> bool:
    try:
        flow_run = client.read_flow_run(UUID(execution_id))
    except (ObjectNotFound, ValueError):
        return False
    if flow_run.state and flow_run.state.is_final():
        return False
    client.set_flow_run_state(flow_run.id, state, force=True)
    return True


def _verb(state: Any) -> str:
    return {StateType.SCHEDULED: "rescheduled", StateType.CANCELLED: "cancelled"}.get(state.type, "crashed")


def _unfinished_runs(client: SyncPrefectClient, deployment_ids: list[UUID]) -> list[FlowRun]:
    if not deployment_ids:
        return []
    unfinished = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    runs: list[FlowRun] = []
    while True:
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
            sort=FlowRunSort.ID_DESC,
            limit=200,
            offset=len(runs),
        )
        runs += page
        if len(page) < 200:
            return runs


def _claimer(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """The granary runner that last claimed a run, from its Pending state; None for runs of other workers."""
    for state in reversed(client.read_flow_run_states(flow_run_id)):
        if state.is_pending():
            message = state.message or ""
            return message.removeprefix(CLAIM) if message.startswith(CLAIM) else None
    return None


def _is_dead(runner_id: str) -> bool:
    """Whether the runner `host:pid:nonce` ran on this host and its process is gone."""
    host, _, rest = runner_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():  # in a container, a restarted worker gets the pid its dead predecessor had
        return runner_id not in _started_here
    return not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
