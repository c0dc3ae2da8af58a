"""Runs granary flow runs as threads of one long-lived process (see shared notes: ~0.5 s a run, not ~3 s).

Prefect's own runner starts an interpreter per flow run; since the real work happens in containers, the flow body
is thin and threads are enough. What Prefect does not do in-process, this runner does: it watches its runs for
cancellation and stops their containers, and it removes containers left behind by a runner that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flow_engine import run_flow
from prefect.states import Cancelled, Crashed, Pending
from prefect.utilities.engine import propose_state_sync

from granary_flows.execution import cancel_requested
from granary_flows.runtimes.base import Runtime

logger = logging.getLogger("granary.runner")
WATCH_INTERVAL = 0.5


def new_runner_id() -> str:
    """`host:pid:nonce`: enough to tell, on the same host, whether the runner that started a container is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InProcessRunner:
    """Polls for due runs of its deployments, claims each and runs it in a thread pool.

    Args:
        flows: deployment id -> the flow to run for it.
        runtimes: the runtimes its flows use, to stop the containers and jobs of cancelled runs.
        runner_id: carried by every container this runner starts (`new_runner_id()`).
        limit: how many runs at once.
        poll_interval: seconds between looks for due runs.
    """

    def __init__(
        self,
        flows: dict[UUID, Flow[..., Any]],
        runtimes: list[Runtime],
        runner_id: str,
        limit: int = 8,
        poll_interval: float = 1.0,
    ):
        self.flows = flows
        self.runtimes = runtimes
        self.runner_id = runner_id
        self.limit = limit
        self.poll_interval = poll_interval
        self.in_flight: dict[UUID, Any] = {}
        self._lock = threading.Lock()

    def serve(self, stop: threading.Event) -> None:
        """Run until `stop` is set; in-flight runs are then cancelled and their containers stopped."""
        with get_client(sync_client=True) as client, ThreadPoolExecutor(self.limit, "granary-run") as pool:
            next_poll = 0.0
            while not stop.is_set():
                now = datetime.now(timezone.utc).timestamp()
                try:
                    if now >= next_poll:
                        self._claim_due_runs(client, pool)
                        next_poll = now + self.poll_interval
                    self._stop_cancelling_runs(client)
                except Exception:  # a server that is away for a while must not end the runner
                    logger.exception("polling the Prefect server failed; trying again")
                stop.wait(WATCH_INTERVAL)
            for flow_run_id in list(self.in_flight):
                self._cancel(flow_run_id, "the runner is stopping")

    def _claim_due_runs(self, client: SyncPrefectClient, pool: ThreadPoolExecutor) -> None:
        free = self.limit - len(self.in_flight)
        if free <= 0:
            return
        due = client.get_scheduled_flow_runs_for_deployments(
            list(self.flows), scheduled_before=datetime.now(timezone.utc), limit=free
        )
        for flow_run in due:
            if flow_run.id in self.in_flight or flow_run.deployment_id not in self.flows:
                continue
            try:
                state = propose_state_sync(client, Pending(), flow_run_id=flow_run.id)
            except Abort:
                continue  # another runner claimed it first
            if not state.is_pending():
                continue
            with self._lock:
                self.in_flight[flow_run.id] = flow_run
            pool.submit(self._execute, flow_run.id, self.flows[flow_run.deployment_id])

    def _execute(self, flow_run_id: UUID, flow: Flow[..., Any]) -> None:
        try:
            with get_client(sync_client=True) as client:
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
        logger.info("flow run %s: %s; stopped %d container(s) or job(s)", flow_run_id, why, stopped)


def reap_orphans(runtimes: list[Runtime], client: SyncPrefectClient) -> list[tuple[str, str]]:
    """Deal with what runners on this host that died left behind, and mark their runs Crashed.

    Containers are removed; a Batch job is left running, so that retrying its run re-attaches to it.

    Returns:
        (execution id, what became of it) for each execution found.
    """
    found = []
    for runtime in runtimes:
        for execution_id, what in runtime.orphans(_is_dead):
            found.append((execution_id, what))
            try:
                flow_run = client.read_flow_run(UUID(execution_id))
            except (ObjectNotFound, ValueError):
                continue
            if flow_run.state and not flow_run.state.is_final():
                client.set_flow_run_state(flow_run.id, Crashed(message=what), force=True)
    return found


def _is_dead(runner_id: str) -> bool:
    """Whether the runner `host:pid:nonce` ran on this host and its process is gone."""
    host, _, rest = runner_id.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
