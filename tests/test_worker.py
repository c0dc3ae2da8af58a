"""granary's in-process runner as a worker: work pools, claims, draining, restarts and a server that goes away."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helpers import (
    api_get,
    api_post,
    cancel_and_time,
    containers_of,
    granary_serve,
    logs_of,
    read_until,
    register_definitions,
    stop_process,
    task_copy,
    task_runs_of,
    wait_final,
)
from typer.testing import CliRunner

from granary_flows import layout
from granary_flows.cli import app
from granary_flows.restarts import CLAIM
from granary_flows.runtimes.base import LABEL_EXECUTION

DEAD_RUNNER = f"{os.uname().nodename}:999999:deadbeef"


def pending_messages(client, flow_run_id) -> list[str]:
    return [s.message or "" for s in client.read_flow_run_states(flow_run_id) if s.is_pending()]


def containers_for(docker_runtime, flow_run_id, running_only: bool = False) -> list:
    """Its containers; sparse, because docker-py inspects each listed container and one removed meanwhile raised."""
    label = {"label": f"{LABEL_EXECUTION}={flow_run_id}"}
    return docker_runtime.client.containers.list(all=not running_only, filters=label, sparse=True)


def containers_started(docker_runtime, flow_run_id) -> list:
    """Its containers that started, whether they are still running or already exited."""
    filters = {"label": f"{LABEL_EXECUTION}={flow_run_id}", "status": ["running", "exited"]}
    return docker_runtime.client.containers.list(all=True, filters=filters, sparse=True)


def wait_for_container(docker_runtime, flow_run_id, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not containers_for(docker_runtime, flow_run_id, running_only=True):
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.1)


@contextmanager
def serving_a_sleeper(client, folder: Path, name: str, *arguments: str):
    """`granary serve ARGUMENTS` in a process of its own, serving a copy of the sleeper task (60 s timeout) named
    `name`; yields the process and the deployment, and stops the process on exit."""
    task_copy("sleeper", folder, name, timeout=60)
    process = granary_serve(*arguments, "-d", str(folder))
    try:
        read_until(process, "waiting for runs", timeout=180)
        yield process, client.read_deployment_by_name(f"{name}/{name}")
    finally:
        stop_process(process)


def test_a_worker_runs_its_pools_tasks_including_ones_registered_after_it_started(client, prefect_server, tmp_path):
    task_copy("hello", tmp_path / "first", "pool-hello")
    deployed = CliRunner().invoke(app, ["deploy", "--pool", "granary-threads", "-d", str(tmp_path / "first")])
    assert deployed.exit_code == 0, deployed.output
    stranger = _plain_prefect_deployment(client, "granary-threads")

    # A worker with no task files at all: everything comes from the registry in Prefect.
    (tmp_path / "empty").mkdir()
    worker = granary_serve("--pool", "granary-threads", command="worker", cwd=tmp_path / "empty")
    try:
        output = read_until(worker, "waiting for runs", timeout=180)
        assert "granary worker, pool granary-threads" in output and "pool-hello" in output
        unknown_run = client.create_flow_run_from_deployment(stranger, parameters={})
        hello = client.read_deployment_by_name("pool-hello/pool-hello")
        flow_run = client.create_flow_run_from_deployment(hello.id, parameters={"name": "pool"})
        final = wait_final(client, flow_run.id, timeout=180)
        assert final.state.is_completed(), final.state.message
        assert final.state.result()["results"][0]["title"] == "greeting"
        [claim] = pending_messages(client, flow_run.id)
        assert claim.startswith(CLAIM)  # claimed by this worker's in-process runner, not a Prefect worker
        [online] = client.read_workers_for_work_pool("granary-threads", limit=10, offset=0)
        assert online.name == claim.removeprefix(CLAIM)

        # Registered from another folder while the worker runs: the worker never saw its file.
        late = task_copy("hello", tmp_path / "elsewhere", "late-hello", version="1.0.0")
        registered = CliRunner().invoke(app, ["register", "--pool", "granary-threads", str(late)])
        assert registered.exit_code == 0, registered.output
        deployment = client.read_deployment_by_name("late-hello/late-hello")
        first = wait_final(client, client.create_flow_run_from_deployment(deployment.id, parameters={"name": "a"}).id)
        assert first.state.is_completed(), first.state.message
        assert first.state.result()["version"] == "1.0.0"
        # Registered again with a new version: its next run runs it, with no restart.
        task_copy("hello", tmp_path / "elsewhere", "late-hello", version="2.0.0", timeout=30)
        again = CliRunner().invoke(app, ["register", "--pool", "granary-threads", str(late)])
        assert again.exit_code == 0, again.output
        second = wait_final(client, client.create_flow_run_from_deployment(deployment.id, parameters={"name": "b"}).id)
        assert second.state.is_completed(), second.state.message
        assert second.state.result()["version"] == "2.0.0" and second.flow_version == "2.0.0"
        assert client.read_flow_run(first.id).flow_version == "1.0.0"  # each run records the version it ran

        time.sleep(2)  # several polls later, the run of a deployment that is not granary's is still waiting
        assert client.read_flow_run(unknown_run.id).state.is_scheduled()
    finally:
        stop_process(worker)


def _plain_prefect_deployment(client, pool: str):
    """A deployment of some other Prefect flow in the same work pool: a granary worker leaves its runs alone."""
    flow_id = client.create_flow_from_name("not-granary")
    return client.create_deployment(flow_id=flow_id, name="not-granary", work_pool_name=pool, entrypoint="x.py:f")


def test_two_runners_on_one_deployment_never_run_the_same_run(client, prefect_server, docker_runtime, tmp_path):
    from prefect.states import Scheduled

    from granary_flows.catalog import FixedCatalog
    from granary_flows.definition import RuntimeKind
    from granary_flows.restarts import new_runner_id
    from granary_flows.runner import InProcessRunner
    from granary_flows.store import ResultsStore

    served = register_definitions(client, [task_copy("hello", tmp_path, "twin-hello")])
    [deployment_id] = served
    stop = threading.Event()
    threads = []
    for _ in range(2):
        runner = InProcessRunner(
            FixedCatalog(served),
            ResultsStore(),
            {RuntimeKind.DOCKER: docker_runtime},
            new_runner_id(),
            limit=4,
            poll_interval=0.05,
        )
        threads.append(threading.Thread(target=runner.serve, args=(stop,), daemon=True))
    since = time.time()
    due = Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(seconds=3))  # all due at the same moment
    runs = [
        client.create_flow_run_from_deployment(deployment_id, parameters={"name": f"twin {i}"}, state=due)
        for i in range(12)
    ]
    for thread in threads:
        thread.start()
    try:
        finals = [wait_final(client, r.id, timeout=120) for r in runs]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert all(f.state.is_completed() for f in finals), [f.state.message for f in finals]
    for flow_run in runs:
        assert len(pending_messages(client, flow_run.id)) == 1
        assert len(containers_of(docker_runtime, flow_run.id, since)) == 1
    claimers = {pending_messages(client, r.id)[0] for r in runs}
    assert len(claimers) == 2  # both runners took part


def test_cancellation_ends_the_run_cancelled_within_two_seconds_and_says_so(client, runner, docker_runtime):
    deployment = client.read_deployment_by_name("sleeper/sleeper")
    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 2.8})
    wait_for_container(docker_runtime, flow_run.id)
    took = cancel_and_time(client, flow_run.id, force=False)
    assert took < 5, f"{took:.2f} s from Cancelling to Cancelled"
    said = logs_of(client, flow_run.id)
    assert any("cancellation was requested: stopping its containers and jobs" in line for line in said)
    assert not any("Traceback" in line for line in said)  # a cancel is no error
    assert "Cancelled" in said[-1], said[-3:]
    [attempt] = task_runs_of(client, flow_run.id)
    assert attempt.state.is_cancelled(), attempt.state  # the attempt too, not Failed with exit code 137


def test_drain_finishes_the_running_execution_before_stopping(client, prefect_server, docker_runtime, tmp_path):
    with serving_a_sleeper(client, tmp_path, "drain-sleeper", "--drain") as (serve, deployment):
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 3})
        wait_for_container(docker_runtime, flow_run.id)
        serve.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert serve.poll() is None  # still finishing the execution
        assert serve.wait(timeout=30) == 0
        assert client.read_flow_run(flow_run.id).state.is_completed()


def test_sigterm_without_drain_cancels_the_running_execution_promptly(client, prefect_server, docker_runtime, tmp_path):
    with serving_a_sleeper(client, tmp_path, "term-sleeper") as (serve, deployment):
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 60})
        wait_for_container(docker_runtime, flow_run.id)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=15) == 0
        assert client.read_flow_run(flow_run.id).state.is_cancelled()
        assert containers_for(docker_runtime, flow_run.id) == []
        assert any("the runner is stopping: stopping its containers" in line for line in logs_of(client, flow_run.id))


def test_a_restarted_serve_re_attaches_to_its_containers_and_settles_what_its_predecessor_left(
    client, prefect_server, docker_runtime, tmp_path, results_root
):
    from prefect.states import Pending, Running

    since = time.time()
    with serving_a_sleeper(client, tmp_path, "restart-sleeper") as (first, deployment):
        running = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 30})
        ending = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 10})
        # Each is looked for on its own: on a loaded machine one container can start seconds after the other.
        started: set = set()
        deadline = time.monotonic() + 180
        while started != {running.id, ending.id}:
            assert time.monotonic() < deadline, "the containers never started"
            started |= {each.id for each in (running, ending) if containers_started(docker_runtime, each.id)}
            time.sleep(0.1)
        assert not client.read_flow_run(ending.id).state.is_final()  # the serve about to die had not settled it
        first.kill()  # no chance to clean up: both containers go on without anyone watching
        first.wait(timeout=10)
    # The short one ends meanwhile; the long one is still running when the new serve starts.
    deadline = time.monotonic() + 60
    while containers_for(docker_runtime, ending.id, running_only=True):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Three more runs a dead runner had claimed: one not started yet; one started with nothing left of it; one whose
    # results it stored before it died, without saying so.
    claimed, started, stored = (
        client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 0.5}) for _ in range(3)
    )
    for flow_run in (claimed, started, stored):
        client.set_flow_run_state(flow_run.id, Pending(message=CLAIM + DEAD_RUNNER), force=True)
    for flow_run in (started, stored):
        client.set_flow_run_state(flow_run.id, Running(), force=True)
    document = results_root / "restart-sleeper" / str(stored.id) / "granary-execution.json"
    document.parent.mkdir(parents=True)
    document.write_text('{"status": "successful"}')
    gone = layout.work_root() / str(uuid.uuid4())  # the work folder of a run this server no longer has
    (gone / "left-behind").mkdir(parents=True)

    with serving_a_sleeper(client, tmp_path, "restart-sleeper") as (second, _):
        output = "".join(second.output)
        assert not gone.exists()
        for resumed in (running, ending):
            assert f"rescheduled {resumed.id}: the process running it died; its container" in output
        assert f"rescheduled {claimed.id}: runner {DEAD_RUNNER} stopped before starting it" in output
        assert f"rescheduled {started.id}: runner {DEAD_RUNNER} stopped while it ran, nothing of it left" in output
        assert f"completed {stored.id}: runner {DEAD_RUNNER} stopped after storing its results" in output
        assert client.read_flow_run(stored.id).state.is_completed()
        assert containers_of(docker_runtime, stored.id, since) == []
        for resumed in (running, ending, claimed, started):
            final = wait_final(client, resumed.id, timeout=180)
            assert final.state.is_completed(), final.state.message
            assert len(containers_of(docker_runtime, resumed.id, since)) == 1  # re-attached: no second container
        for resumed in (running, ending):
            assert any("re-attaching to container" in line for line in logs_of(client, resumed.id))
            document = client.read_flow_run(resumed.id).state.result()
            assert document["results"] == [] and document["exit_code"] == 0
        assert containers_for(docker_runtime, running.id) == []
        ours = {str(flow_run.id) for flow_run in (running, ending, claimed, started, stored)}
        assert [folder for folder in layout.work_root().iterdir() if folder.name in ours] == []  # none left behind


def test_a_server_away_for_a_minute_is_waited_for_and_nothing_is_lost_or_run_twice(docker_runtime, tmp_path):
    from granary_flows.server import free_port, local_server

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    task_copy("sleeper", tmp_path / "tasks", "outage-sleeper", timeout=120)
    serve = None
    since = time.time()
    try:
        with local_server(port=port, extra_env=server_env):
            serve = granary_serve(
                "-d", str(tmp_path / "tasks"), PREFECT_API_URL=api, GRANARY_RESULTS_URI=str(tmp_path / "results")
            )
            read_until(serve, "waiting for runs", timeout=180)
            deployment = api_get("/deployments/name/outage-sleeper/outage-sleeper", api).json()
            create = f"/deployments/{deployment['id']}/create_flow_run"
            running = api_post(create, {"parameters": {"duration": 10}}, api).json()
            later = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
            due_in_outage = api_post(
                create,
                {
                    "parameters": {"duration": 1},
                    "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
                },
                api,
            ).json()
            wait_for_container(docker_runtime, running["id"])
        # The server is gone for a minute: the container ends and the second run falls due meanwhile.
        time.sleep(60)
        with local_server(port=port, extra_env=server_env):
            for flow_run in (running, due_in_outage):
                deadline = time.monotonic() + 150
                while (state := api_get(f"/flow_runs/{flow_run['id']}", api).json()["state"])["type"] != "COMPLETED":
                    assert state["type"] in ("SCHEDULED", "PENDING", "RUNNING"), state
                    assert time.monotonic() < deadline, state
                    time.sleep(1)
                assert len(containers_of(docker_runtime, flow_run["id"], since)) == 1  # run exactly once
            assert serve.poll() is None
        said = "".join(serve.output)
        assert "the Prefect server did not answer" in said and "the Prefect server answers again" in said
    finally:
        stop_process(serve)


def test_the_runner_sends_prefects_flow_run_heartbeats_for_its_runs_in_flight(client, runner, docker_runtime):
    """Heartbeats reach the server's event stream, which is what Prefect's automations read (granary's servers do
    not store events: docs/production.md)."""
    import asyncio

    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    heard: list = []
    listening = threading.Event()

    async def listen() -> None:
        names = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]))
        async with get_events_subscriber(filter=names) as events:
            listening.set()
            async for event in events:
                heard.append(event)

    threading.Thread(target=lambda: asyncio.run(listen()), daemon=True).start()
    assert listening.wait(30)
    runner.heartbeat_seconds = 1  # Prefect's PREFECT_FLOWS_HEARTBEAT_FREQUENCY, 180 s by default
    try:
        deployment = client.read_deployment_by_name("sleeper/sleeper")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 2.5})
        assert wait_final(client, flow_run.id, timeout=180).state.is_completed()
    finally:
        runner.heartbeat_seconds = 180
    mine = [e for e in heard if e.resource.id == f"prefect.flow-run.{flow_run.id}"]
    assert mine, "no heartbeat reached the server's event stream"
    assert mine[0].related[0].id == f"prefect.flow.{flow_run.flow_id}"


def test_a_claim_whose_answer_was_lost_is_run_once_without_a_restart(client, docker_runtime, tmp_path, monkeypatch):
    """The server takes the claim, then the runner's request fails (a 503 or a broken connection after the commit):
    the run is Pending under this runner's name and nobody would take it. The runner finds it and runs it, once."""
    import httpx
    from helpers import runner_for

    import granary_flows.runner as runner_module
    from granary_flows.definition import RuntimeKind
    from granary_flows.store import ResultsStore

    served = register_definitions(client, [task_copy("hello", tmp_path, "lost-claim-hello")])
    [deployment_id] = served
    real = runner_module.propose_state_sync
    lost: list[str] = []

    def answer_lost(client_, state, flow_run_id, **options):
        committed = real(client_, state, flow_run_id=flow_run_id, **options)
        if not lost:
            lost.append(str(flow_run_id))
            raise httpx.ReadTimeout("the answer to the claim was lost")
        return committed

    monkeypatch.setattr(runner_module, "propose_state_sync", answer_lost)
    since = time.time()
    flow_run = client.create_flow_run_from_deployment(deployment_id, parameters={"name": "claimed once"})
    with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
        final = wait_final(client, flow_run.id, timeout=90)
    assert lost == [str(flow_run.id)]
    assert final.state.is_completed(), final.state.message
    assert len(pending_messages(client, flow_run.id)) == 1  # claimed once
    assert len(containers_of(docker_runtime, flow_run.id, since)) == 1  # and run once
