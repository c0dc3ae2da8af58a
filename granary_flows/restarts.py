"""What a runner that died left behind on this host, settled before a new runner starts: its containers and Batch
jobs (re-attached to, or removed), the runs it had claimed (scheduled again, or Crashed), its work folders.

A runner is known by `host:pid:nonce`, written into every claim it makes and carried by every container and job it
starts, so that a new runner on the same host can tell whether the one that started them is still alive.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from typing import Any, NamedTuple
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
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
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Completed, Crashed, Scheduled

from granary_flows import layout
from granary_flows.runtimes.base import Runtime
from granary_flows.store import ResultsStore

logger = logging.getLogger("granary.runner")
CLAIM = "claimed by granary runner "
PAGE = 200  # runs per read: the most a Prefect server at its defaults answers
_started_here: set[str] = set()


def new_runner_id() -> str:
    """`host:pid:nonce`: enough to tell, on the same host, whether the runner that started a container is alive."""
    runner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _started_here.add(runner_id)
    return runner_id


class Settled(NamedTuple):
    """What `reconcile` did with one execution."""

    action: str  # crashed, rescheduled, completed, cancelled, or found (its run was gone or already final)
    execution_id: str
    reason: str


def reconcile(
    client: SyncPrefectClient,
    runtimes: list[Runtime],
    deployment_ids: list[UUID] | None,
    store: ResultsStore | None = None,
) -> list[Settled]:
    """Settle what runners on this host that died left behind, before a new runner starts, so that no run is lost
    and none runs twice.

    - A container or Batch job whose run still waits for it goes on (a container that ended is kept until its
      outcome is stored); its run is scheduled again, and running it re-attaches to the container or job. One whose
      run has ended is removed.
    - A run that a dead runner had claimed but not started is scheduled again. One it was running with nothing left
      of it is Completed when its results document is in the store (it ended, and only its state was not said),
      else scheduled again.
    - Work folders of runs that have ended are removed.

    Args:
        deployment_ids: the deployments whose runs to look at; None for all of them.
        store: the results store the dead runner used (default: as configured).

    Returns:
        One `Settled` per execution found.
    """
    settled = []

    def is_final(flow_run_id: str) -> bool:
        return _is_final(client, flow_run_id)

    for runtime in runtimes:
        for orphan in runtime.orphans(_is_dead, is_final):
            if orphan.resumable:
                state: Any = Scheduled(message=f"{orphan.what}; re-attaching")
            else:
                state = Crashed(message=orphan.what)
            if _settle(client, orphan.execution_id, state):
                settled.append(Settled(_verb(state), orphan.execution_id, state.message))
            else:  # its run is gone or already final: only the container or job was left to deal with
                settled.append(Settled("found", orphan.execution_id, orphan.what))
    resumed = {done.execution_id for done in settled if done.action == "rescheduled"}
    for flow_run in _unfinished_runs(client, deployment_ids):
        if str(flow_run.id) in resumed:
            continue
        claimer = _claimer(client, flow_run.id)
        if claimer is None or not _is_dead(claimer):
            continue
        assert flow_run.state is not None
        if flow_run.state.is_pending():
            state = Scheduled(message=f"runner {claimer} stopped before starting it; scheduled again")
        elif flow_run.state.type == StateType.CANCELLING:
            state = Cancelled(message=f"runner {claimer} stopped while it was being cancelled")
        elif _results_stored(client, store or ResultsStore(), flow_run):
            state = Completed(message=f"runner {claimer} stopped after storing its results, before saying so")
        else:
            state = Scheduled(message=f"runner {claimer} stopped while it ran, nothing of it left; scheduled again")
        client.set_flow_run_state(flow_run.id, state, force=True)
        settled.append(Settled(_verb(state), str(flow_run.id), state.message))
    _remove_ended_work(client)
    return settled


def _results_stored(client: SyncPrefectClient, store: ResultsStore, flow_run: FlowRun) -> bool:
    """Whether the run's results document (a task's or a pipeline's) is in the store: written last, once the
    execution's outputs are stored."""
    try:
        name = client.read_flow(flow_run.flow_id).name
        documents = (
            layout.execution_document(name, str(flow_run.id)),
            layout.pipeline_document(name, str(flow_run.id)),
        )
        return any(store.exists(document) for document in documents)
    except Exception as err:  # a store that cannot be read: the run is run again rather than left
        logger.warning("the results of flow run %s could not be looked for (%s)", flow_run.id, err)
        return False


def _remove_ended_work(client: SyncPrefectClient) -> None:
    """Work folders (`$GRANARY_HOME/work/<flow run>`) of runs that ended or are gone: nothing will use them. The runs
    are read 200 to a call: a restart after thousands of runs must not ask about each one (it took 2 minutes)."""
    root = layout.work_root()
    folders = {folder.name: folder for folder in root.iterdir() if _is_uuid(folder.name)} if root.is_dir() else {}
    names = list(folders)
    for start in range(0, len(names), PAGE):
        asked = names[start : start + PAGE]
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(name) for name in asked])), limit=PAGE
        )
        unfinished = {str(run.id) for run in runs if run.state is None or not run.state.is_final()}
        for name in asked:
            if name not in unfinished:
                shutil.rmtree(folders[name], ignore_errors=True)


def _is_uuid(name: str) -> bool:
    try:
        UUID(name)
    except ValueError:
        return False
    return True


def _is_final(client: SyncPrefectClient, flow_run_id: str) -> bool:
    """Whether a run has ended, or does not exist on this server."""
    try:
        flow_run = client.read_flow_run(UUID(flow_run_id))
    except (ObjectNotFound, ValueError):
        return True
    return flow_run.state is not None and flow_run.state.is_final()


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
    verbs = {StateType.SCHEDULED: "rescheduled", StateType.CANCELLED: "cancelled", StateType.COMPLETED: "completed"}
    return verbs.get(state.type, "crashed")


def _unfinished_runs(client: SyncPrefectClient, deployment_ids: list[UUID] | None) -> list[FlowRun]:
    if deployment_ids is not None and not deployment_ids:
        return []
    unfinished = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    deployments = DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)) if deployment_ids else None
    runs: list[FlowRun] = []
    while True:
        try:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))),
                deployment_filter=deployments,
                sort=FlowRunSort.ID_DESC,
                limit=PAGE,
                offset=len(runs),
            )
        except PrefectHTTPStatusError as err:  # a run the server cannot list: the runner starts all the same
            logger.warning("the unfinished runs could not be read (%s); runs of dead runners are not settled", err)
            return runs
        runs += page
        if len(page) < PAGE:
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
