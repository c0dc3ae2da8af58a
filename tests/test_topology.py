"""granary on Prefect's scale-out topology (tests/topology.py brings it up): two API replicas started with
`--no-services` behind HAProxy, one services process, PostgreSQL, Redis with prefect-redis, two `granary worker`s on
one work pool, Docker and AWS Batch (moto) for compute. What a user of it sees: every execution runs once, whatever
part dies; a schedule fires once, not once per replica; `granary api` works through the load balancer."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from helpers import BUCKET, TOKENS, read_until, stop_process, task_copy
from rest import prefect_auth, request
from topology import completed, running_topology, wait_for

from granary_flows.runtimes.base import LABEL_FLOW_RUN, LABEL_RUNNER

pytestmark = pytest.mark.topology
EXECUTIONS = 1000
FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]

prefect_api = httpx.Client(auth=prefect_auth())  # the servers these tests start require the session's credential


@pytest.fixture(scope="module")
def topology(aws: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("topology")
    workers = {"GRANARY_RESULTS_URI": f"s3://{BUCKET}/topology", "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5"}
    with running_topology(work, worker_environment=workers) as running:
        tasks = work / "tasks"
        task_copy("hello", tasks, "topology-hello")
        task_copy("batch-probe", tasks, "topology-probe", retries={"attempts": 0})
        registered = running.granary("deploy", "--pool", running.pool, "-d", str(tasks))
        assert registered.returncode == 0, registered.stdout + registered.stderr
        running.start_worker(0)
        running.start_worker(1)
        yield running


class ContainerCreations:
    """Every container the Docker engine creates for a granary run meanwhile: flow run id -> the runners that
    created one."""

    def __init__(self) -> None:
        from granary_flows.runtimes.docker import docker_client

        self.by_run: dict[str, list[str]] = {}
        self._events = docker_client().events(
            decode=True, filters={"type": "container", "event": "create", "label": LABEL_FLOW_RUN}
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        try:
            for event in self._events:
                labels = event["Actor"]["Attributes"]
                self.by_run.setdefault(labels[LABEL_FLOW_RUN], []).append(labels.get(LABEL_RUNNER, ""))
        except Exception:  # closed
            return

    def close(self) -> None:
        self._events.close()


def create_runs(api: str, deployment: str, count: int, due: datetime, parameters: dict[str, Any]) -> list[str]:
    deployment_id = prefect_api.get(f"{api}/deployments/name/{deployment}/{deployment}", timeout=60).json()["id"]
    scheduled = {"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}}
    body = {"parameters": parameters, "state": scheduled}

    def create(_: int) -> str:
        # As Prefect's client does, a 503 (HAProxy with no replica up for a moment) is asked again.
        created = request("POST", f"{api}/deployments/{deployment_id}/create_flow_run", body, timeout=120)
        return str(created.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(count)))


def final_runs(api: str, flow_run_ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(flow_run_ids), 200):
        body = {"flow_runs": {"id": {"any_": flow_run_ids[start : start + 200]}}, "limit": 200}
        found += prefect_api.post(f"{api}/flow_runs/filter", json=body, timeout=120).json()
    return found


@pytest.mark.timeout(1800)
def test_every_execution_runs_once_across_two_workers_while_an_api_replica_and_a_worker_die(topology):
    """1,000 executions of hello on Docker and ten on Batch, due at once. A fifth of the way, one API replica is
    killed (SIGKILL); two fifths of the way, one worker, which is then started again; the replica comes back at
    seven tenths. Each execution ends Completed, with exactly one container (the Docker engine's own events say so),
    and both workers ran some."""
    api = topology.api
    creations = ContainerCreations()
    try:
        due = datetime.now(timezone.utc) + timedelta(seconds=10)  # the workers start as the runs are being created
        batch_runs = create_runs(api, "topology-probe", 10, due, {"label": "topology"})
        runs = create_runs(api, "topology-hello", EXECUTIONS, due, {"name": "topology"})

        wait_for(lambda: completed(api, runs) >= EXECUTIONS // 5, "a fifth of the executions", 600)
        topology.kill_replica(0)
        wait_for(lambda: completed(api, runs) >= 2 * EXECUTIONS // 5, "two fifths, on one replica", 600)
        topology.kill_worker(0)
        killed_at = time.time()
        topology.start_worker(0)
        wait_for(lambda: completed(api, runs) >= 7 * EXECUTIONS // 10, "seven tenths", 600)
        topology.start_replica(0)
        wait_for(lambda: len(_final(api, runs + batch_runs)) == len(runs) + len(batch_runs), "every run final", 900)
    finally:
        time.sleep(2)
        creations.close()

    ended = final_runs(api, runs + batch_runs)
    assert Counter(r["state"]["type"] for r in ended) == {"COMPLETED": EXECUTIONS + 10}, [
        (r["id"], r["state"]["message"]) for r in ended if r["state"]["type"] != "COMPLETED"
    ][:5]
    per_run = {run: creations.by_run.get(run, []) for run in runs}
    assert [run for run, made in per_run.items() if len(made) != 1] == []  # once each: never twice, never lost
    runners = Counter(made[0] for made in per_run.values())
    hosts_pids = {runner.rsplit(":", 1)[0] for runner in runners}
    assert len(hosts_pids) >= 3, runners  # the two workers, and the one started again
    said = (topology.work / "worker-0.log").read_text().splitlines()  # its restart says what it settled
    settled = [line for line in said if line.lstrip().startswith(("rescheduled ", "completed "))]
    reattached = sum("re-attaching" in line for line in settled)
    rescheduled = sum("scheduled again" in line for line in settled)
    print(
        f"\ntopology: {EXECUTIONS} Docker + 10 Batch executions, each completed with one container; runs per runner "
        f"{sorted(runners.values(), reverse=True)}; the worker killed at "
        f"{datetime.fromtimestamp(killed_at, timezone.utc):%H:%M:%S} had {reattached + rescheduled} in flight: "
        f"{reattached} re-attached to their containers, {rescheduled} scheduled again, by its restart"
    )
    assert reattached + rescheduled > 0  # it died with runs in flight, and its restart took them over


def _final(api: str, flow_run_ids: list[str]) -> list[str]:
    done = []
    for start in range(0, len(flow_run_ids), 200):
        chunk = flow_run_ids[start : start + 200]
        body = {"flow_runs": {"id": {"any_": chunk}, "state": {"type": {"any_": FINAL}}}, "limit": 200}
        answer = prefect_api.post(f"{api}/flow_runs/filter", json=body, timeout=120)
        if answer.status_code == 200:
            done += [run["id"] for run in answer.json()]
    return done


def test_a_schedule_fires_once_per_time_not_once_per_replica(topology):
    tasks = topology.work / "scheduled"
    task_copy("hello", tasks, "topology-ticks", schedules=[{"interval": 2, "parameters": {"name": "tick"}}])
    registered = topology.granary("deploy", "--pool", topology.pool, "-d", str(tasks))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    api = topology.api
    deployment = prefect_api.get(f"{api}/deployments/name/topology-ticks/topology-ticks", timeout=60).json()
    of_it = {"deployments": {"id": {"any_": [deployment["id"]]}}}
    done = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}

    def completed_ticks() -> int:
        return int(prefect_api.post(f"{api}/flow_runs/count", json=of_it | done, timeout=60).json())

    creations = ContainerCreations()
    try:
        wait_for(lambda: completed_ticks() >= 5, "five scheduled runs completed", 180)
        runs = prefect_api.post(f"{api}/flow_runs/filter", json=of_it | {"limit": 200}, timeout=60).json()
    finally:
        creations.close()
        removed = topology.granary("tasks", "remove", "topology-ticks")  # its runs to come go with it
        assert removed.returncode == 0, removed.stdout + removed.stderr
    ran = [run["id"] for run in runs if run["state_type"] == "COMPLETED"]
    assert len(ran) >= 5 and all(len(creations.by_run.get(run, [])) == 1 for run in ran)  # each ran once
    times = Counter(run["expected_start_time"] for run in runs)
    assert len(times) >= 5 and max(times.values()) == 1, times.most_common(3)  # one run per time it names
    assert all(run["created_by"]["type"] == "SCHEDULE" for run in runs)


def test_granary_api_works_through_the_load_balancer(topology, identities):
    from helpers import granary_serve

    from granary_flows.server import free_port, wait_until

    port = free_port()
    process = granary_serve(
        "--port", str(port), command="api", PREFECT_API_URL=topology.api, GRANARY_RESULTS_URI=f"s3://{BUCKET}/topology",
        GRANARY_API_AUTH="tokens", GRANARY_API_TOKENS_FILE=str(identities.tokens_file),
        GRANARY_API_URL=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        read_until(process, "granary api:", timeout=180)
        wait_until(lambda: httpx.get(f"{url}/conformance", timeout=2).status_code == 200, "granary api", process)
        admin = {"Authorization": f"Bearer {TOKENS['admin']}"}
        body = {"inputs": {"name": "balanced"}}
        answer = httpx.post(f"{url}/processes/topology-hello/execution", headers=admin, json=body, timeout=180)
        assert answer.status_code == 200, answer.text
        assert httpx.get(answer.json()["greeting"]["href"], headers=admin, timeout=60).text == "Hello, balanced!\n"
    finally:
        stop_process(process)
