"""`granary api` against `granary run` and a bare `docker run`, in one run, on one local Prefect server.

    .venv/bin/python bench/api.py [--runs 10] [--clients 50] [--executes 500] [--jobs 10000] [--database sqlite]
                                  [--only jobs]

A Prefect server, `granary serve` and `granary api` (static tokens) are started here, each a process of its own.
Printed: the median wall time of `--runs` synchronous executes of `hello` (`POST /processes/hello/execution`, the
client's view: from the request to the results document), of the same execution through `granary run --watch` (the
CLI's view: from the command to its exit), and of a bare sandboxed `docker run` of the same image; then
`--executes` asynchronous executes from `--clients` concurrent clients (the 201 answer's p50/p95, and whether every
job reached a final state exactly once); then `GET /jobs?limit=50` with `--jobs` jobs in the server (p50/p95 over 50
requests, as an admin and as a user who submitted few of them). `--only jobs` measures the job list alone, on a
server that nothing else keeps busy meanwhile.

Beside each HTTP figure, its floor measured in the same run: the Prefect server's own endpoint doing the same work
(`POST /deployments/{id}/create_flow_run` from as many clients; `POST /flow_runs/filter` for the same page, newest
first, narrowed to the registered deployments and, for the user, to their submitter tag). The asynchronous executes
are timed twice: of `hello`, which the runner executes meanwhile, and of `idle`, a registered task nobody serves, next
to the server's own creates of `idle`, so that the API's own cost is the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="granary-bench-api-"))

from bench.worker import bare_docker_runs, prefect_api  # noqa: E402  (sets the credential first)
from granary_flows.server import free_port, local_server, wait_until  # noqa: E402
from tests.postgres import local_postgres  # noqa: E402
from tests.rest import prefect_http  # noqa: E402

TOKENS = {"admin": "bench-admin-token", "user": "bench-user-token"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextmanager
def started(command: list[str], environment: dict[str, str], ready: str) -> Any:
    """A `granary` command in a process of its own, once it has printed `ready`; stopped on exit."""
    log = open(WORK / f"{command[0]}.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "granary_flows.cli", *command], env=os.environ | environment,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while ready not in (WORK / f"{command[0]}.log").read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError((WORK / f"{command[0]}.log").read_text())
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def sync_executes(api: str, headers: dict[str, str], runs: int) -> list[float]:
    times = []
    with httpx.Client(timeout=120) as client:
        for i in range(runs + 1):  # the first warms up and is not counted
            begun = time.perf_counter()
            answer = client.post(f"{api}/processes/hello/execution", headers=headers,
                                 json={"inputs": {"name": f"sync {i}"}})  # fmt: skip
            assert answer.status_code == 200 and "greeting" in answer.json(), answer.text
            times.append(time.perf_counter() - begun)
    return times[1:]


def cli_runs(environment: dict[str, str], runs: int) -> list[float]:
    times = []
    for i in range(runs + 1):
        begun = time.perf_counter()
        subprocess.run([sys.executable, "-m", "granary_flows.cli", "run", "hello", "-p", f"name=cli {i}", "--watch"],
                       env=os.environ | environment, cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        times.append(time.perf_counter() - begun)
    return times[1:]


def async_executes(
    api: str, headers: dict[str, str], count: int, clients: int, process: str = "hello"
) -> tuple[list[float], list[str]]:
    """(seconds each 201 took, the job ids), from `clients` threads at once."""

    def one(i: int) -> tuple[float, str]:
        with httpx.Client(timeout=120) as client:
            begun = time.perf_counter()
            answer = client.post(f"{api}/processes/{process}/execution", headers=headers | {"Prefer": "respond-async"},
                                 json={"inputs": {"name": f"async {i}"}})  # fmt: skip
            took = time.perf_counter() - begun
            assert answer.status_code == 201, answer.text
            return took, answer.json()["jobID"]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        answered = list(pool.map(one, range(count)))
    return [took for took, _ in answered], [job for _, job in answered]


def prefect_creates(prefect: str, deployment: str, count: int, clients: int) -> list[float]:
    """Seconds each of the server's own creates took, from `clients` threads at once: the floor of an execute."""

    def one(i: int) -> float:
        with prefect_http(timeout=120) as client:
            begun = time.perf_counter()
            answer = client.post(f"{prefect}/deployments/{deployment}/create_flow_run",
                                 json={"parameters": {"name": f"direct {i}"}, "tags": ["granary-api"]})  # fmt: skip
            assert answer.status_code == 201, answer.text
            return time.perf_counter() - begun

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, range(count)))


def final_states(prefect: str, job_ids: list[str], timeout: float) -> dict[str, list[str]]:
    """job -> the final states its run passed through, once every run is final."""
    deadline = time.monotonic() + timeout
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        # Only the runs that became final: reading every pending run each time loads the server it measures.
        final = {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]}}
        runs = prefect_api.post(f"{prefect}/flow_runs/filter", json={"flow_runs": {"id": {"any_": sorted(pending)},
                          "state": final}, "limit": 200}, timeout=60).json()  # fmt: skip
        pending -= {r["id"] for r in runs}
        time.sleep(1)
    finals = {}
    for job in job_ids:
        states = prefect_api.get(f"{prefect}/flow_run_states/", params={"flow_run_id": job}, timeout=60).json()
        finals[job] = [s["type"] for s in states if s["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
    return finals


def fill_jobs(prefect: str, count: int) -> None:
    """`count` runs of a registered task nobody serves: they stay accepted, and the job list holds them."""
    deployment = prefect_api.get(f"{prefect}/deployments/name/idle/idle", timeout=30).json()["id"]

    def create(i: int) -> None:
        body = {"parameters": {"name": f"idle {i}"}, "tags": ["granary-api", "submitted-by:filler"]}
        for _ in range(10):
            answer = prefect_api.post(f"{prefect}/deployments/{deployment}/create_flow_run", json=body, timeout=60)
            if answer.is_success:
                return
            time.sleep(0.5)
        raise RuntimeError("the server refused to create runs")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(count)))


def list_times(api: str, headers: dict[str, str], requests: int) -> list[float]:
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(requests + 1):
            begun = time.perf_counter()
            answer = client.get(f"{api}/jobs", headers=headers, params={"limit": 50})
            assert answer.status_code == 200, answer.text
            times.append(time.perf_counter() - begun)
    return times[1:]


def prefect_list_times(prefect: str, deployments: list[str], submitter: str | None, requests: int) -> list[float]:
    """The server's own read of the same page: 51 runs newest first of the registered deployments (and a tag)."""
    body: dict[str, Any] = {"deployments": {"id": {"any_": deployments}}, "sort": "EXPECTED_START_TIME_DESC",
                            "limit": 51, "offset": 0}  # fmt: skip
    if submitter:
        body["flow_runs"] = {"tags": {"all_": [f"submitted-by:{submitter}"]}}
    times = []
    with prefect_http(timeout=60) as client:
        for _ in range(requests + 1):
            begun = time.perf_counter()
            answer = client.post(f"{prefect}/flow_runs/filter", json=body)
            assert answer.status_code == 200, answer.text
            times.append(time.perf_counter() - begun)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="synchronous executes, `granary run`s and docker runs")
    parser.add_argument("--executes", type=int, default=500, help="asynchronous executes")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients of the asynchronous executes")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the server for the job list")
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--only", choices=["jobs"], help="measure the job list alone")
    args = parser.parse_args()

    tokens = WORK / "tokens.json"
    tokens.write_text(json.dumps([{"token": TOKENS["admin"], "subject": "admin", "roles": ["admin"]},
                                  {"token": TOKENS["user"], "subject": "user", "roles": []}]))  # fmt: skip
    idle = WORK / "idle.yaml"
    idle.write_text((ROOT / "deployments" / "hello.yaml").read_text().replace("name: hello", "name: idle", 1))
    admin, user = ({"Authorization": f"Bearer {TOKENS[who]}"} for who in ("admin", "user"))
    with ExitStack() as stack:
        server_env = {"PREFECT_HOME": str(WORK / "prefect")}
        if args.database == "postgres":
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = stack.enter_context(local_postgres(free_port()))
        prefect = stack.enter_context(
            local_server(port=free_port(), extra_env=server_env, log_file=WORK / "server.log")
        )
        api_port = free_port()
        environment = {
            "PREFECT_API_URL": prefect,
            "GRANARY_RESULTS_URI": str(WORK / "results"),
            "GRANARY_HOME": str(WORK / "home"),
            "GRANARY_API_AUTH": "tokens",
            "GRANARY_API_TOKENS_FILE": str(tokens),
            "GRANARY_API_URL": f"http://127.0.0.1:{api_port}",
        }
        subprocess.run([sys.executable, "-m", "granary_flows.cli", "register", str(idle)], env=os.environ | environment,
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        stack.enter_context(started(["serve", "--limit", "8"], environment, "waiting for runs"))
        stack.enter_context(started(["api", "--port", str(api_port)], environment, "granary api:"))
        api = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{api}/conformance").status_code == 200, "granary api")

        idle_id = prefect_api.get(f"{prefect}/deployments/name/idle/idle", timeout=30).json()["id"]
        if not args.only:
            sync = statistics.median(sync_executes(api, user, args.runs))
            cli = statistics.median(cli_runs(environment, args.runs))
            bare = statistics.median(bare_docker_runs(args.runs))
            print(
                f"measured: sync execute {sync:.3f} s, granary run {cli:.3f} s, bare docker run {bare:.3f} s",
                flush=True,
            )

            begun = time.perf_counter()
            answers, jobs = async_executes(api, user, args.executes, args.clients)
            finals = final_states(prefect, jobs, timeout=60 + args.executes * 2)
            async_wall = time.perf_counter() - begun
            once = sum(1 for states in finals.values() if states == ["COMPLETED"])
            print(f"measured: {args.executes} async executes in {async_wall:.1f} s", flush=True)

            direct = prefect_creates(prefect, idle_id, args.executes, args.clients)
            idle_answers, _ = async_executes(api, user, args.executes, args.clients, "idle")
            print("measured: async executes of idle, and the server's own creates", flush=True)

        fill_jobs(prefect, args.jobs)
        as_admin = list_times(api, admin, 50)
        as_user = list_times(api, user, 50)
        deployments = [idle_id, prefect_api.get(f"{prefect}/deployments/name/hello/hello", timeout=30).json()["id"]]
        direct_admin = prefect_list_times(prefect, deployments, None, 50)
        direct_user = prefect_list_times(prefect, deployments, "user", 50)

    print(f"\n| measure | {args.database} | target |")
    print("| --- | --- | --- |")
    if not args.only:
        print(f"| synchronous execute of hello (median of {args.runs}) | {sync:.2f} s | |")
        print(f"| `granary run hello --watch` (median of {args.runs}) | {cli:.2f} s | |")
        print(f"| bare sandboxed `docker run` (median of {args.runs}) | {bare:.2f} s | |")
        print(f"| execute / granary run | {sync / cli:.2f}x | at most 1.2x |")
        print(f"| execute over bare docker run | +{sync - bare:.2f} s | at most +0.35 s |")
        print(
            f"| {args.executes} async executes from {args.clients} clients: 201 p50 / p95 "
            f"| {_p50_p95(answers)} | p95 at most 100 ms |"
        )
        print(f"| ... reached a final state exactly once (Completed) | {once} of {args.executes} | all |")
        print(f"| ... all final after | {async_wall:.1f} s ({args.executes / async_wall * 60:.0f} per minute) | |")
        print(
            f"| {args.executes} async executes of `idle` (nobody runs it): 201 p50 / p95 | {_p50_p95(idle_answers)} | |"
        )
        print(f"| ... the server's own create_flow_run of `idle`, as many clients: p50 / p95 | {_p50_p95(direct)} | |")
        print(f"| ... execute / the server's create, p95 | {_ratio(idle_answers, direct)} | |")
    print(
        f"| GET /jobs?limit=50 with {args.jobs:,} more jobs, admin: p50 / p95 | {_p50_p95(as_admin)} "
        "| p95 at most 200 ms |"
    )
    print(f"| ... the server's own /flow_runs/filter for that page: p50 / p95 | {_p50_p95(direct_admin)} | |")
    user_jobs = 0 if args.only else args.executes * 2 + args.runs + 1
    print(f"| ... as a user with {user_jobs} jobs of their own: p50 / p95 | {_p50_p95(as_user)} | p95 at most 200 ms |")
    print(f"| ... the server's own /flow_runs/filter for that page: p50 / p95 | {_p50_p95(direct_user)} | |")
    print(
        f"| GET /jobs / the server's filter, p95, admin / user | {_ratio(as_admin, direct_admin)} / "
        f"{_ratio(as_user, direct_user)} | |"
    )


def _p50_p95(times: list[float]) -> str:
    return f"{percentile(times, 0.5) * 1000:.0f} / {percentile(times, 0.95) * 1000:.0f} ms"


def _ratio(ours: list[float], floor: list[float]) -> str:
    return f"{percentile(ours, 0.95) / percentile(floor, 0.95):.2f}x"


if __name__ == "__main__":
    main()
