"""What granary adds on top of Prefect and Docker, measured in one run on one local Prefect server (SQLite).

    .venv/bin/python bench/overhead.py [--runs 10] [--burst 20]

Prints medians for: a bare `docker run` of the hello image (docker SDK, same command and output mount); a no-op
Prefect flow run served the way `granary serve` serves (in-process runner, 1 s polling); a granary `hello`
execution end to end through the same runner; then the ratios, the throughput of a burst of executions created at
once, and the runner process's CPU time per execution. Latencies are creation -> Completed, from the server's own
timestamps.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="granary-bench-"))
ROOT = Path(__file__).resolve().parent.parent
os.environ |= {
    "PREFECT_HOME": str(WORK / "prefect"),
    "GRANARY_RESULTS_URI": str(WORK / "results"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
sys.path.insert(0, str(ROOT))

with socket.socket() as probe:  # a free port, found before anything imports Prefect and fixes its settings
    probe.bind(("127.0.0.1", 0))
    PORT = probe.getsockname()[1]
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PORT}/api"

from prefect import flow  # noqa: E402
from prefect.client.orchestration import SyncPrefectClient, get_client  # noqa: E402
from prefect.logging.handlers import APILogWorker  # noqa: E402

from granary_flows.definition import load_definition  # noqa: E402
from granary_flows.deployment import register  # noqa: E402
from granary_flows.flows import build_flow  # noqa: E402
from granary_flows.runner import InProcessRunner, new_runner_id  # noqa: E402
from granary_flows.runtimes.docker import DockerRuntime, docker_client  # noqa: E402
from granary_flows.server import local_server  # noqa: E402
from granary_flows.store import ResultsStore  # noqa: E402


@flow(name="noop", persist_result=False)
def noop() -> None:
    """The floor: a flow run that does nothing."""


def bare_docker_run(client, runs: int) -> list[float]:
    out = WORK / "bare"
    out.mkdir()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        client.containers.run(
            "granary/hello:1",
            ["/bin/sh", "/app/hello.sh"],
            remove=True,
            network_mode="none",
            environment={"NAME": "bench", "OUTPUT_DIR": "/out"},
            volumes={str(out): {"bind": "/out", "mode": "rw"}},
        )
        times.append(time.perf_counter() - started)
    return times


def latency(client: SyncPrefectClient, deployment_id, parameters: dict) -> tuple[float, float]:
    """(creation -> Completed, claimed (Pending) -> Completed): what a user waits, and what the run itself costs."""
    flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    while True:
        current = client.read_flow_run(flow_run.id)
        if current.state and current.state.is_final():
            assert current.state.is_completed(), current.state.message
            pending = next(s for s in client.read_flow_run_states(flow_run.id) if s.type.value == "PENDING")
            return (
                (current.state.timestamp - current.created).total_seconds(),
                (current.state.timestamp - pending.timestamp).total_seconds(),
            )
        time.sleep(0.05)


def burst(client: SyncPrefectClient, deployment_id, count: int) -> float:
    """Executions a minute when `count` are created at once."""
    started = time.perf_counter()
    ids = [client.create_flow_run_from_deployment(deployment_id, parameters={"name": f"b{i}"}).id for i in range(count)]
    pending = set(ids)
    while pending:
        for flow_run_id in list(pending):
            state = client.read_flow_run(flow_run_id).state
            if state and state.is_final():
                assert state.is_completed(), state.message
                pending.discard(flow_run_id)
        time.sleep(0.2)
    return count / (time.perf_counter() - started) * 60


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--limit", type=int, default=8, help="the runner's concurrency (granary serve's default)")
    args = parser.parse_args()

    engine = docker_client(max_pool_size=64)
    bare = bare_docker_run(engine, args.runs)
    with local_server(port=PORT, log_file=WORK / "server.log"), get_client(sync_client=True) as client:
        runtime = DockerRuntime(engine)
        runner_id = new_runner_id()
        hello = load_definition(ROOT / "deployments" / "hello.yaml")
        hello_id = register(client, hello)
        noop_id = client.create_deployment(flow_id=client.create_flow_from_name("noop"), name="noop")
        flows = {hello_id: build_flow(hello, ResultsStore(), runtime, runner_id), noop_id: noop}
        runner = InProcessRunner(flows, runtime, runner_id, limit=args.limit, poll_interval=1.0)
        stop = threading.Event()
        thread = threading.Thread(target=runner.serve, args=(stop,), daemon=True)
        thread.start()
        latency(client, noop_id, {})  # warm both paths once
        latency(client, hello_id, {"name": "warm"})
        noop_times = [latency(client, noop_id, {}) for _ in range(args.runs)]
        cpu_before = time.process_time()
        granary_times = [latency(client, hello_id, {"name": "bench"}) for _ in range(args.runs)]
        cpu_per_execution = (time.process_time() - cpu_before) / args.runs
        per_minute = burst(client, hello_id, args.burst)
        stop.set()
        thread.join(timeout=30)
        APILogWorker.drain_all(timeout=5)

    median = statistics.median
    bare_s = median(bare)
    waited = {name: median(t[0] for t in runs) for name, runs in (("noop", noop_times), ("granary", granary_times))}
    cost = {name: median(t[1] for t in runs) for name, runs in (("noop", noop_times), ("granary", granary_times))}
    rows = [
        ("bare docker run (hello image)", bare_s, bare_s, "s"),
        ("no-op Prefect flow run, in-process runner", waited["noop"], cost["noop"], "s"),
        ("granary hello execution, in-process runner", waited["granary"], cost["granary"], "s"),
        ("granary / no-op flow run", waited["granary"] / waited["noop"], cost["granary"] / cost["noop"], "x"),
        (
            "granary / (no-op flow run + bare docker run)",
            waited["granary"] / (waited["noop"] + bare_s),
            cost["granary"] / (cost["noop"] + bare_s),
            "x",
        ),
    ]
    print(f"\nmedians of {args.runs} runs{'':<30}creation->Completed  claimed->Completed")
    for label, first, second, unit in rows:
        print(f"  {label:<46} {first:8.3f} {unit} {second:14.3f} {unit}")
    print(f"  {'bench process CPU per granary execution':<46} {cpu_per_execution:8.3f} s (runner and polling client)")
    print(f"  {f'throughput, {args.burst} created at once (limit {args.limit})':<46} {per_minute:8.1f} executions/min")


if __name__ == "__main__":
    main()
