"""granary's runner against bare `docker run`s, in one run, on the Prefect servers granary starts and documents.

    .venv/bin/python bench/worker.py [--configs sqlite-prefect,sqlite,postgres-prefect,postgres] [--depths 100,2000]
                                     [--calls 50] [--latency 10] [--topology] [--batch 5] [--s3 3]
                                     [--compare-prefect-runner 10] [--memory 1000]

Server configurations (`--configs`), each a server of its own started as `granary_flows.server.local_server` starts
it: `sqlite` is the embedded default (`granary serve`, `granary server start`: granary's lean services, uvloop and
httptools), `postgres` the production guide's (the same, on PostgreSQL); `sqlite-prefect` and `postgres-prefect` are
Prefect's own defaults (`GRANARY_SERVER_SERVICES=prefect`), what granary started before, measured at the first depth
only. For each configuration and depth (`--depths`): that many executions of `hello` due at the same moment, run by
`granary serve` 8 at a time, against as many sandboxed bare `docker run`s 8 at a time measured just before in the
same round: throughput of each and their ratio, then CPU-seconds per execution of the machine, the Docker daemons,
the runner, the Prefect server and PostgreSQL, and the client errors (creations or reads that failed or timed out).
Then (`--latency`) that many executions one after the other: the median latency (the run's creation to its Completed
state, from the server's timestamps) over the median bare `docker run`.

`--calls N`: N executions due at once on the embedded default, with the server's access log on, and the HTTP calls
each execution made of the server, by route, with what each is for. `--topology`: the depths on Prefect's scale-out
topology (tests/topology.py: two API replicas behind HAProxy, a services process, PostgreSQL, Redis, two
`granary worker`s of 8), beside the single server's figure.

Older comparisons, each skipped at 0: `--batch` executions on moto's Batch against a bare boto3 SubmitJob +
DescribeJobs loop at the same backoff; `--s3` times a Docker task writing 1 GiB of outputs to an S3 root on moto
against a raw s3fs `put`; `--compare-prefect-runner` runs of Prefect's own `serve()` against granary's runner (latency,
CPU, throughput of a burst of 100); `--memory` executions while the runner's resident memory is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="granary-bench-"))
TICKS = os.sysconf("SC_CLK_TCK")

from tests.rest import one_credential, prefect_http, request  # noqa: E402

one_credential()  # every server the benchmark starts requires it (as everything granary starts), every client sends it
from granary_flows.runtimes.docker import docker_client  # noqa: E402
from granary_flows.server import free_port, local_server  # noqa: E402
from tests.postgres import local_postgres  # noqa: E402

prefect_api = prefect_http()


def bare_docker_run(
    engine: Any,
    out: Path,
    command: tuple[str, ...] = ("/bin/sh", "/app/hello.sh"),
    environment: dict[str, str] | None = None,
    memory_mib: int = 64,
    cpus: float = 0.5,
) -> None:
    """One sandboxed bare `docker run` of the hello image, writing to `out` (hello itself by default)."""
    engine.containers.run(
        "granary/hello:1",
        list(command),
        remove=True,
        environment={"NAME": "bench", "OUTPUT_DIR": "/out"} | (environment or {}),
        volumes={str(out): {"bind": "/out", "mode": "rw"}},
        # the sandbox granary's runner puts every container in (runtimes/docker.py), with the task's resources
        network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
        tmpfs={"/tmp": "rw,size=256m"}, pids_limit=512, mem_limit=f"{memory_mib}m", memswap_limit=f"{memory_mib}m",
        nano_cpus=int(cpus * 1e9),
    )  # fmt: skip


def bare_docker_runs(runs: int) -> list[float]:
    engine = docker_client()
    out = WORK / "bare"
    out.mkdir(exist_ok=True)
    times = []
    for _ in range(runs + 1):  # the first one warms the engine up and is not counted
        started = time.perf_counter()
        bare_docker_run(engine, out)
        times.append(time.perf_counter() - started)
    return times[1:]


def bare_docker_throughput(count: int, concurrency: int = 8) -> float:
    """Sandboxed bare `docker run`s of hello per minute, `count` of them, `concurrency` at a time: the engine's own
    limit on this machine, which granary's runner is measured against."""
    engine = docker_client(max_pool_size=concurrency * 2)
    out = WORK / f"bare-{count}"
    out.mkdir(exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: bare_docker_run(engine, out), range(count)))
    return count / (time.perf_counter() - started) * 60


def server_cpu_seconds(api: str) -> float:
    """CPU-seconds of the Prefect server answering at `api` and of every process of its session (`local_server`
    starts it in a session of its own)."""
    port = api.rsplit(":", 1)[1].split("/")[0]
    leader = next(pid for pid, command in _processes() if "server" in command and f"--port\0{port}\0" in command)
    return sum(cpu_seconds(pid) for pid, _ in _processes() if _session(pid) == leader)


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_text()))
            except OSError:
                continue
    return found


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except OSError:
        return None


CONFIGS = {
    "sqlite-prefect": ("sqlite", {"GRANARY_SERVER_SERVICES": "prefect"}, "SQLite, Prefect's defaults (before)"),
    "sqlite": ("sqlite", {}, "SQLite, the embedded default"),
    "postgres-prefect": ("postgres", {"GRANARY_SERVER_SERVICES": "prefect"}, "PostgreSQL, Prefect's defaults (before)"),
    "postgres": ("postgres", {}, "PostgreSQL, the production guide's"),
}
STALL = 180  # seconds without a run ending after which a round is said to have stalled
DAEMONS = ("dockerd", "containerd", "containerd-shim-runc-v2")


def machine_cpu_seconds() -> float:
    """CPU-seconds the whole machine has been busy (every core, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICKS


def programs_cpu_seconds(names: tuple[str, ...]) -> float:
    """CPU-seconds of every process running one of these programs."""
    total = 0.0
    for pid, command in _processes():
        if command.split("\0")[0].rsplit("/", 1)[-1] in names:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
    return total


class Meters:
    """CPU-seconds of the machine, the Docker daemons, PostgreSQL, the runner processes and the Prefect server
    processes, between `start()` and `per(n)`."""

    def __init__(self, runners: list[int], servers: Callable[[], float]):
        self.runners, self.servers = runners, servers

    def read(self) -> dict[str, float]:
        return {
            "machine": machine_cpu_seconds(),
            "docker": programs_cpu_seconds(DAEMONS),
            "postgres": programs_cpu_seconds(("postgres",)),
            "runner": sum(cpu_seconds(pid) for pid in self.runners if Path(f"/proc/{pid}").exists()),
            "server": self.servers(),
        }

    def start(self) -> None:
        self.before = self.read()

    def per(self, executions: int) -> dict[str, float]:
        after = self.read()
        return {name: (after[name] - self.before[name]) / executions for name in after}


def depth_round(api: str, depth: int, runner_pids: list[int], deployment_id: str, servers: Callable[[], float]) -> dict:
    """`depth` executions due at once against as many bare `docker run`s, measured just before."""
    meters = Meters(runner_pids, servers)
    meters.start()
    bare = bare_docker_throughput(depth)
    bare_cpu = meters.per(depth)
    errors: list[str] = []
    due = datetime.now(timezone.utc) + timedelta(seconds=10 + depth * 0.05)
    ids = [i for i in (create(api, deployment_id, {"name": f"deep {n}"}, due, errors) for n in range(depth)) if i]
    late = datetime.now(timezone.utc) > due
    time.sleep(max(0.0, due.timestamp() - time.time() - 0.5))
    meters.start()
    done = finished(api, ids, errors)
    cpu = meters.per(len(ids))
    last = max(seconds(f["state"]["timestamp"]) for f in done.values())
    granary = len(ids) / (last - max(due.timestamp(), seconds(min(f["created"] for f in done.values())))) * 60
    return {"depth": depth, "bare": bare, "granary": granary, "cpu": cpu, "bare_cpu": bare_cpu, "errors": errors,
            "late": late, "created": len(ids), "ids": ids}  # fmt: skip


class Hog:
    """A plain busy loop in a process of its own: one core kept busy, as a developer's browser or IDE would."""

    def __enter__(self) -> Hog:
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *_: Any) -> None:
        self.process.kill()
        self.process.wait()


class Answers:
    """How long the server took to answer: every call the benchmark makes (creations, reads) and a probe that asks it
    to count runs (a read of the database) every quarter of a second, so that a server that stops answering anybody
    shows even while the benchmark itself waits."""

    def __init__(self, api: str):
        self.api = api
        self.times: list[float] = []
        self.timeouts = 0
        self._stop = threading.Event()
        self._probe = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Answers:
        ANSWERS.append(self)
        self._probe.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._probe.join()
        ANSWERS.remove(self)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(httpx.HTTPError):
                timed(lambda: prefect_api.post(f"{self.api}/flow_runs/count?{BY_BENCH}", json={}, timeout=PATIENCE))

    @property
    def slowest(self) -> float:
        return max(self.times, default=0.0)


ANSWERS: list[Answers] = []
PATIENCE = 30.0  # seconds a client waits for an answer, as Prefect's own client does


def timed(call: Callable[[], Any]) -> Any:
    """`call()`, its time recorded by every `Answers` open (a timeout counted as one)."""
    started = time.perf_counter()
    try:
        return call()
    except httpx.TimeoutException:
        for answers in ANSWERS:
            answers.timeouts += 1
        raise
    finally:
        for answers in ANSWERS:
            answers.times.append(time.perf_counter() - started)


def busy_rounds(name: str, depth: int, rounds: int) -> list[dict]:
    """`rounds` rounds of `depth` due at once beside a CPU hog, each with the slowest answer any client got, the
    client timeouts and whether every execution ran exactly once."""
    database, environment, _ = CONFIGS[name]
    found = []
    with prefect_server(database, environment, f"{name}-busy") as api, Hog():
        port = api.rsplit(":", 1)[1].split("/")[0]
        with runner_process(api, f"hello-{name}-busy", False) as (process, deployment_id):
            for index in range(rounds):
                with Answers(api) as answers:
                    try:
                        result = depth_round(api, depth, [process.pid], deployment_id, lambda: _server_cpu(port))
                        result["once"] = ran_once(api, result.pop("ids"))
                    except Exception as err:
                        result = {"depth": depth, "failed": f"{type(err).__name__}: {str(err)[:300]}"}
                result |= {"slowest": answers.slowest, "timeouts": answers.timeouts, "round": index + 1}
                found.append(result)
                print(f"measured {name} beside a CPU hog, round {index + 1}: {result}", flush=True)
    return found


def ran_once(api: str, flow_run_ids: list[str]) -> int:
    """How many of the runs entered Running exactly once and are Completed."""
    once = 0
    for start in range(0, len(flow_run_ids), 200):
        body = {"flow_runs": {"id": {"any_": flow_run_ids[start : start + 200]}}, "limit": 200}
        runs = timed(lambda body=body: prefect_api.post(f"{api}/flow_runs/filter?{BY_BENCH}", json=body, timeout=60))
        once += sum(1 for r in runs.json() if r["run_count"] == 1 and r["state"]["type"] == "COMPLETED")
    return once


def latency_round(api: str, deployment_id: str, runs: int) -> dict[str, float]:
    """Median seconds from creation to Completed of `runs` executions one after the other, and of bare runs."""
    finished(api, [create(api, deployment_id, {"name": "warm"})])
    latencies = []
    for _ in range(runs):
        [flow_run] = finished(api, [create(api, deployment_id, {"name": "one"})]).values()
        latencies.append(seconds(flow_run["state"]["timestamp"]) - seconds(flow_run["created"]))
    return {"granary": statistics.median(latencies), "bare": statistics.median(bare_docker_runs(runs))}


def run_configuration(name: str, depths: list[int], latency: int) -> dict[str, Any]:
    """The rounds of one server configuration: its depths, then its latency."""
    database, environment, _ = CONFIGS[name]
    rounds: list[dict] = []
    found: dict[str, Any] = {"rounds": rounds}
    with prefect_server(database, environment, name) as api:
        port = api.rsplit(":", 1)[1].split("/")[0]
        with runner_process(api, f"hello-{name}", False) as (process, deployment_id):
            for depth in depths:
                try:
                    result = depth_round(api, depth, [process.pid], deployment_id, lambda: _server_cpu(port))
                    result.pop("ids")
                    rounds.append(result)
                except Exception as err:  # a server that gives up under the load is a figure too
                    rounds.append({"depth": depth, "failed": f"{type(err).__name__}: {str(err)[:300]}"})
                print(f"measured {name} at {depth}: {rounds[-1]}", flush=True)
            if latency:
                found["latency"] = latency_round(api, deployment_id, latency)
                print(f"measured {name} latency: {found['latency']}", flush=True)
    return found


def _server_cpu(port: str) -> float:
    return server_cpu_seconds(f"http://127.0.0.1:{port}/api")


def topology_rounds(depths: list[int]) -> list[dict]:
    """The depths on Prefect's scale-out topology (tests/topology.py), two workers of 8."""
    sys.path.insert(0, str(ROOT / "tests"))
    from topology import running_topology

    rounds = []
    import yaml

    with running_topology(WORK / "topology", worker_environment={"GRANARY_RESULTS_URI": str(WORK / "results")}) as top:
        tasks = WORK / "topology-tasks"
        tasks.mkdir()
        hello = yaml.safe_load((ROOT / "deployments" / "hello.yaml").read_text()) | {"name": "hello-topology"}
        (tasks / "hello-topology.yaml").write_text(yaml.safe_dump(hello))
        deployed = top.granary("deploy", "--pool", top.pool, "-d", str(tasks))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        workers = [top.start_worker(0).pid, top.start_worker(1).pid]
        deployment_id = prefect_api.get(f"{top.api}/deployments/name/hello-topology/hello-topology").json()["id"]
        pids = [p.pid for p in top.processes() if p.pid not in workers]
        for depth in depths:
            result = depth_round(top.api, depth, workers, deployment_id, lambda: _sessions_cpu(pids))
            result.pop("ids")
            rounds.append(result)
            print(f"measured the topology at {depth}: {rounds[-1]}", flush=True)
    return rounds


def _sessions_cpu(leaders: list[int]) -> float:
    """CPU-seconds of the processes of these sessions (the topology's API replicas, services, HAProxy)."""
    return sum(cpu_seconds(pid) for pid, _ in _processes() if _session(pid) in leaders)


def calls_per_execution(executions: int) -> tuple[Counter[tuple[str, str]], int]:
    """(method, route) -> calls the runner made for `executions` due at once on the embedded default (its access log
    on; the benchmark's own calls, its creations and its reads, left out)."""
    log = WORK / "access.log"
    with (
        prefect_server("sqlite", {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"}, "calls", log_file=log) as api,
        runner_process(api, "hello-calls", False) as (_, deployment_id),
    ):
        finished(api, [create(api, deployment_id, {"name": "warm"})])
        time.sleep(6)  # past the runner's fallback look: what follows is the executions' own
        before = len(log.read_text().splitlines())
        due = datetime.now(timezone.utc) + timedelta(seconds=3)
        ids = [create(api, deployment_id, {"name": f"c{i}"}, due) for i in range(executions)]
        finished(api, ids)
        time.sleep(2)  # logs arrive last
        lines = log.read_text().splitlines()[before:]
    calls: Counter[tuple[str, str]] = Counter()
    for line in lines:
        found = re.search(r'"(\w+) /api(/[^ ?]*)[^"]*" \d+', line)
        if found and BY_BENCH not in line:
            route = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", found.group(2))
            calls[found.group(1), route] += 1
    return calls, executions


# What each call a run makes buys, in the words of what a user sees.
CALLS = {
    ("POST", "/flow_runs/{id}/set_state"): "the claim (Pending, exactly once), Running and Completed: the run page",
    ("PATCH", "/flow_runs/{id}"): "Prefect's engine records the flow's version and retry policy on the run",
    ("GET", "/flow_runs/{id}"): "Prefect's engine reads the run it starts (its setup_run_context)",
    ("POST", "/artifacts/"): "the run's report: results, links, quicklooks, summary (one artifact)",
    ("POST", "/deployments/get_scheduled_flow_runs"): "looks for due runs: each fills the places that free up next",
    ("POST", "/flow_runs/filter"): "the runner's look for cancellations it was not told of (every 5 s)",
    ("POST", "/logs/"): "the run's log lines, in batches",
    ("GET", "/block_types/slug/granary-task/block_documents"): "the registry, read every 5 s (new registrations)",
}


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and of the children it has reaped (the flow-run processes Prefect starts)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def runner_process(
    api: str,
    name: str,
    prefect_runner: bool,
    also: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
    environment: dict[str, str] | None = None,
) -> Any:
    """`granary serve` (or `--subprocess`) serving a copy of hello named `name` (with `changes`), and the definitions
    in `also` (file stem -> document); yields (process, the deployment id of `name`)."""
    import yaml

    folder = WORK / name
    folder.mkdir()
    document = yaml.safe_load((ROOT / "deployments" / "hello.yaml").read_text()) | {"name": name} | (changes or {})
    for stem, definition in ({name: document} | (also or {})).items():
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(definition))
    command = [sys.executable, "-m", "granary_flows.cli", "serve", "-d", str(folder), "--limit", "8"]
    settings = {
        "PREFECT_API_URL": api,
        "GRANARY_RESULTS_URI": str(WORK / "results"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # Prefect's serve() polls every 10 s by default
    }
    process = subprocess.Popen(
        command + (["--subprocess"] if prefect_runner else []),
        env=os.environ | settings | (environment or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=WORK,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while "waiting for runs" not in "".join(lines):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("".join(lines))
            time.sleep(0.2)
        deployment = prefect_api.get(f"{api}/deployments/name/{name}/{name}").json()
        yield process, deployment["id"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def create(
    api: str,
    deployment_id: str,
    parameters: dict[str, Any],
    due: datetime | None = None,
    errors: list[str] | None = None,
) -> str | None:
    """A flow run of the deployment; with `errors`, a creation that fails is said there (None) instead of raised."""
    body: dict[str, Any] = {"parameters": parameters}
    if due:
        body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}}
    url = f"{api}/deployments/{deployment_id}/create_flow_run?{BY_BENCH}"
    try:
        return str(timed(lambda: request("POST", url, body, timeout=PATIENCE)).json()["id"])
    except Exception as err:
        if errors is None:
            raise
        errors.append(f"create: {type(err).__name__}: {str(err)[:200]}")
        return None


FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
BY_BENCH = "by=bench"  # in the server's access log, the benchmark's own calls, left out of the runner's


def finished(api: str, flow_run_ids: list[str], errors: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """id -> flow run, once every one of them is final (each must be Completed).

    Only runs that became final are read, and a large set is looked at once a second: reading every pending run ten
    times a second made the server serialize 2,000 runs a second at a depth of 2,000, and it was the harness, not
    the runner, that slowed the server down as the queue deepened. A read the server fails is said in `errors`.
    """
    done: dict[str, dict[str, Any]] = {}
    pause = 0.1 if len(flow_run_ids) <= 10 else 1.0
    moved = time.monotonic()
    while len(done) < len(flow_run_ids):
        if time.monotonic() - moved > STALL:  # a server that stops moving runs: its figure is that it stalled
            raise TimeoutError(f"no run ended for {STALL} s, after {len(done)} of {len(flow_run_ids)}")
        pending = [i for i in flow_run_ids if i not in done]
        try:
            body = {"flow_runs": {"id": {"any_": pending}, "state": {"type": {"any_": FINAL}}}, "limit": 200}
            response = timed(
                lambda body=body: prefect_api.post(f"{api}/flow_runs/filter?{BY_BENCH}", json=body, timeout=60)
            )
            response.raise_for_status()
        except httpx.HTTPError as err:  # a busy SQLite server answers 503, or an empty 500, now and then
            if errors is not None:
                errors.append(f"read: {type(err).__name__}: {str(err)[:200]}")
            time.sleep(0.2)
            continue
        for flow_run in response.json():
            if flow_run["state"]["type"] != "COMPLETED":
                logs = prefect_api.post(
                    f"{api}/logs/filter",
                    json={"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200, "sort": "TIMESTAMP_ASC"},
                ).json()
                raise RuntimeError("\n".join([str(flow_run["state"])] + [log["message"] for log in logs]))
            done[flow_run["id"]] = flow_run
            moved = time.monotonic()
        if len(response.json()) < 200:
            time.sleep(pause)
    return done


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def measure(api: str, name: str, prefect_runner: bool, runs: int, burst: int) -> dict[str, float]:
    with runner_process(api, name, prefect_runner) as (process, deployment_id):
        finished(api, [create(api, deployment_id, {"name": "warm"})])
        cpu = cpu_seconds(process.pid)
        latencies = []
        for _ in range(runs):
            [flow_run] = finished(api, [create(api, deployment_id, {"name": "bench"})]).values()
            latencies.append(seconds(flow_run["state"]["timestamp"]) - seconds(flow_run["created"]))
        cpu_latency = (cpu_seconds(process.pid) - cpu) / runs
        due = datetime.now(timezone.utc) + timedelta(seconds=5 + burst * 0.1)
        ids = [create(api, deployment_id, {"name": f"burst {i}"}, due) for i in range(burst)]
        cpu = cpu_seconds(process.pid)
        assert datetime.now(timezone.utc) < due, "the burst took longer to create than its lead time"
        done = finished(api, ids)
        last = max(seconds(f["state"]["timestamp"]) for f in done.values())
        return {
            "latency": statistics.median(latencies),
            "cpu": cpu_latency,
            "cpu_burst": (cpu_seconds(process.pid) - cpu) / burst,
            "per_minute": burst / (last - due.timestamp()) * 60,
        }


def memory_series(api: str, executions: int) -> list[tuple[int, float]]:
    """(executions done, resident MiB of the runner) every tenth of the way."""
    series = []
    step = max(executions // 10, 1)
    with runner_process(api, "hello-memory", False) as (process, deployment_id):
        series.append((0, resident_mib(process.pid)))
        for done in range(step, executions + 1, step):
            finished(api, [create(api, deployment_id, {"name": f"m{i}"}) for i in range(step)])
            series.append((done, resident_mib(process.pid)))
    return series


BATCH_POLL = 1.0  # the bare loop's first wait, and granary's GRANARY_BATCH_POLL_MIN: the same backoff for both


def batch_comparison(runs: int) -> dict[str, float]:
    """The same job on moto's Batch: a bare boto3 SubmitJob + DescribeJobs loop, then granary executions (creation
    to Completed), median wall time of each and the Batch API calls each made (from moto's request log)."""
    import boto3

    sys.path.insert(0, str(ROOT / "examples" / "batch"))
    import create_resources

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import running_moto

    moto_log = WORK / "moto.log"
    port = free_port()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    os.environ.update(aws)
    with (
        open(moto_log, "wb") as log,
        running_moto(port, log, MOTO_DOCKER_NETWORK_MODE="host"),
        prefect_server("sqlite") as api,
    ):
        create_resources.ensure_queue(create_resources.QUEUE)
        create_resources.register_definition("granary-hello", "granary/hello:1", ["/bin/sh", "/app/hello.sh"],
                                             {"OUTPUT_DIR": "/tmp"})  # fmt: skip
        boto3.client("s3").create_bucket(Bucket="bench")
        batch = boto3.client("batch")

        def bare_job(i: int) -> None:
            job = batch.submit_job(
                jobName=f"bare-{i}",
                jobQueue=create_resources.QUEUE,
                jobDefinition="granary-hello",
                containerOverrides={"environment": [{"name": "NAME", "value": "bench"}]},
            )
            wait = BATCH_POLL
            while batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]["status"] not in ("SUCCEEDED", "FAILED"):
                time.sleep(wait)
                wait = min(wait * 1.5, 20)

        bare_job(-1)  # warms moto and the engine up
        bare_times, bare_calls = _timed_with_calls(moto_log, runs, bare_job)

        changes = {"runtime": {"batch": {"jobDefinition": "granary-hello", "jobQueue": create_resources.QUEUE}},
                   "outputs": {}}  # fmt: skip
        settings = aws | {"GRANARY_RESULTS_URI": "s3://bench/runs", "GRANARY_BATCH_POLL_MIN": str(BATCH_POLL)}
        with runner_process(api, "hello-batch", False, changes=changes, environment=settings) as (_, deployment_id):

            def granary_job(i: int) -> float:
                [flow_run] = finished(api, [create(api, deployment_id, {"name": f"batch {i}"})]).values()
                return seconds(flow_run["state"]["timestamp"]) - seconds(flow_run["created"])

            granary_job(-1)
            granary_times, granary_calls = _timed_with_calls(moto_log, runs, granary_job)
    return {
        "bare": statistics.median(bare_times),
        "granary": statistics.median(granary_times),
        "bare_calls": bare_calls / runs,
        "granary_calls": granary_calls / runs,
    }


# 1 GiB of outputs: one file of half of it and eight of a sixteenth, so that both multipart and whole-object PUTs count
OUTPUT_FILES = {"f0.bin": 512, **{f"f{i}.bin": 64 for i in range(1, 9)}}  # name -> MiB


def s3_comparison(runs: int) -> dict[str, float]:
    """Outputs a Docker task wrote (`OUTPUT_FILES`), stored to an S3 root on moto by granary's runner, against a raw
    s3fs `put` of files of the same sizes, at granary's part size and at s3fs's default, alternating in one run.
    granary's figure is the store step its run logs (`outputs: ... collected in S s`): listing the execution's folder,
    clearing it and the upload. Returns the median MiB per second of each."""
    import s3fs

    from granary_flows.store import multipart_chunk

    part = multipart_chunk()

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import running_moto

    port = free_port()
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    os.environ.update(aws)
    writes = "; ".join(f"head -c {mib * 2**20} /dev/urandom > $OUTPUT_DIR/{name}" for name, mib in OUTPUT_FILES.items())
    changes = {"runtime": {"docker": {"image": "granary/hello:1", "command": ["/bin/sh", "-c", writes]}},
               "resources": {"cpus": 1, "memory": 256}, "outputs": {}}  # fmt: skip
    engine = docker_client()

    def written_by_container(folder: Path) -> Path:
        """The same files, written by the same command in the same sandbox just before, as the runner's are."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        bare_docker_run(engine, folder, ("/bin/sh", "-c", writes), memory_mib=256, cpus=1)
        return folder

    total = sum(OUTPUT_FILES.values())
    rates: dict[str, list[float]] = {"granary": [], "same part size": [], "s3fs default": []}
    moto_seconds: dict[str, list[float]] = {what: [] for what in rates}
    with running_moto(port) as endpoint, prefect_server("sqlite") as api:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        fs.mkdir("bench")
        settings = aws | {"GRANARY_RESULTS_URI": "s3://bench/runs"}
        runner = runner_process(api, "outputs-s3", False, changes=changes, environment=settings)

        def raw_put(folder: str, **options: Any) -> float:
            local = written_by_container(WORK / "s3-files")
            started = time.perf_counter()
            fs.put([str(local / name) for name in OUTPUT_FILES], [f"bench/{folder}/{name}" for name in OUTPUT_FILES],
                   **options)  # fmt: skip
            return time.perf_counter() - started

        moto = int(subprocess.check_output(["pgrep", "-f", f"moto_server.py .* {port}$"]).split()[0])

        def store_timed(what: str, measured: Any) -> None:
            before = cpu_seconds(moto)
            seconds = measured()
            rates[what].append(total / seconds)
            moto_seconds[what].append(cpu_seconds(moto) - before)

        with runner as (_, deployment_id):

            def granary_store() -> float:
                [flow_run_id] = finished(api, [create(api, deployment_id, {"name": "s3"})])
                return _store_seconds(api, flow_run_id)

            for i in range(runs):
                store_timed("granary", granary_store)
                store_timed("same part size", lambda i=i: raw_put(f"same-{i}", chunksize=part))
                store_timed("s3fs default", lambda i=i: raw_put(f"default-{i}"))
    return {
        "part_mib": part / 2**20,
        **{what: statistics.median(found) for what, found in rates.items()},
        **{f"moto {what}": statistics.median(found) for what, found in moto_seconds.items()},
    }


def _store_seconds(api: str, flow_run_id: str) -> float:
    """The seconds a run logged for storing its outputs (its logs reach the server a moment after its end)."""
    deadline = time.monotonic() + 30
    while True:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}}
        messages = [log["message"] for log in prefect_api.post(f"{api}/logs/filter", json=body, timeout=60).json()]
        for message in messages:
            found = re.search(r"^outputs: .* collected in ([0-9.]+) s$", message)
            if found:
                return float(found.group(1))
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {flow_run_id} logged no store step: {messages}")
        time.sleep(0.5)


def _timed_with_calls(moto_log: Path, runs: int, job: Any) -> tuple[list[float], int]:
    """Seconds of each of `runs` calls of `job` (its own figure when it returns one), and the Batch API calls moto
    logged meanwhile."""
    before = _batch_calls(moto_log)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        took = job(i)
        times.append(took if took is not None else time.perf_counter() - started)
    return times, _batch_calls(moto_log) - before


def _batch_calls(moto_log: Path) -> int:
    """Batch's API is REST: moto's request log names each call by its path (`POST /v1/describejobs`)."""
    time.sleep(0.2)  # its log is written by another process
    return sum(1 for line in moto_log.read_text(errors="replace").splitlines() if '"POST /v1/' in line)


@contextmanager
def prefect_server(
    database: str, environment: dict[str, str] | None = None, name: str | None = None, log_file: Path | None = None
) -> Any:
    """A Prefect server as granary starts it (`local_server`), on SQLite or on a PostgreSQL cluster of its own, with
    extra `environment` (`GRANARY_SERVER_SERVICES=prefect`: Prefect's defaults)."""
    name = name or database
    with ExitStack() as stack:
        extra = {"PREFECT_HOME": str(WORK / f"prefect-{name}")} | (environment or {})
        if database == "postgres":
            extra["PREFECT_API_DATABASE_CONNECTION_URL"] = stack.enter_context(local_postgres(free_port()))
        log = log_file or WORK / f"server-{name}.log"
        yield stack.enter_context(local_server(port=free_port(), extra_env=extra, log_file=log))


def print_rounds(title: str, rounds: list[dict], places: int = 8) -> None:
    print(f"\n{title}\n")
    print(
        f"| due at once | bare docker run, 8 at a time | granary, {places} at a time | ratio | CPU-s per execution: "
        "machine (bare) | Docker daemons (bare) | runner | Prefect server | PostgreSQL | client errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rounds:
        if "failed" in r:
            print(f"| {r['depth']:,} | | failed: {r['failed']} | | | | | | | |")
            continue
        cpu, bare = r["cpu"], r["bare_cpu"]
        note = " (created after they were due)" if r["late"] else ""
        print(f"| {r['created']:,}{note} | {r['bare']:.0f} per minute | {r['granary']:.0f} per minute "
              f"| {r['granary'] / r['bare']:.2f}x | {cpu['machine']:.3f} ({bare['machine']:.3f}) "
              f"| {cpu['docker']:.3f} ({bare['docker']:.3f}) | {cpu['runner']:.3f} | {cpu['server']:.3f} "
              f"| {cpu['postgres']:.3f} | {len(r['errors'])} |")  # fmt: skip


def print_busy(name: str, rounds: list[dict]) -> None:
    print(f"\n{CONFIGS[name][2]} ({name}), beside a CPU hog keeping one core busy\n")
    print("| round | bare docker run | granary | ratio | slowest answer | client timeouts | ran once, Completed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rounds:
        if "failed" in r:
            print(f"| {r['round']} | | failed: {r['failed']} | | {r['slowest']:.2f} s | {r['timeouts']} | |")
            continue
        print(f"| {r['round']} | {r['bare']:.0f} per minute | {r['granary']:.0f} per minute "
              f"| {r['granary'] / r['bare']:.2f}x | {r['slowest']:.2f} s | {r['timeouts']} "
              f"| {r['once']} of {r['created']} |")  # fmt: skip
    ok = [r for r in rounds if "failed" not in r]
    if ok:
        ratios = [r["granary"] / r["bare"] for r in ok]
        print(f"\nslowest answer of all rounds: {max(r['slowest'] for r in rounds):.2f} s (target: at most 5 s); "
              f"ratio {min(ratios):.2f}x-{max(ratios):.2f}x (target: at least 0.65x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="sqlite-prefect,sqlite,postgres-prefect,postgres",
                        help=f"server configurations, of {', '.join(CONFIGS)} (empty: skip)")  # fmt: skip
    parser.add_argument("--depths", default="100,2000", help="executions due at once")
    parser.add_argument("--latency", type=int, default=10, help="executions one after the other (0: skip)")
    parser.add_argument("--calls", type=int, default=50, help="executions whose Prefect calls are counted (0: skip)")
    parser.add_argument("--topology", action="store_true", help="the depths on the scale-out topology too")
    parser.add_argument("--batch", type=int, default=0, help="executions on moto's Batch, against a bare loop")
    parser.add_argument("--s3", type=int, default=0, help="1 GiB stores to S3 on moto, against s3fs")
    parser.add_argument("--compare-prefect-runner", type=int, default=0, metavar="RUNS",
                        help="Prefect's serve() against granary's runner, on SQLite and PostgreSQL")  # fmt: skip
    parser.add_argument("--memory", type=int, default=0, help="executions while memory is watched")
    parser.add_argument("--busy", type=int, default=0, metavar="ROUNDS",
                        help="rounds of the first depth beside a CPU hog, each configuration (0: skip)")  # fmt: skip
    args = parser.parse_args()

    depths = [int(depth) for depth in args.depths.split(",") if depth]
    found: dict[str, Any] = {}
    for name in [c for c in args.configs.split(",") if c]:
        # Prefect's defaults are the baseline, at the first depth: the SQLite one stalls at a hundred already.
        found[name] = run_configuration(name, depths if not name.endswith("-prefect") else depths[:1], args.latency)
    for name, result in found.items():
        print_rounds(f"{CONFIGS[name][2]} ({name})", result["rounds"])
        if "latency" in result:
            lat = result["latency"]
            over = lat["granary"] - lat["bare"]
            print(f"\nlatency, median of {args.latency} one after the other: granary {lat['granary']:.2f} s, bare "
                  f"docker run {lat['bare']:.2f} s: +{over:.2f} s (target: at most +0.2 s)")  # fmt: skip
        ok = [r for r in result["rounds"] if "failed" not in r]
        if len(ok) > 1:
            print(f"at {ok[-1]['depth']:,} / at {ok[0]['depth']:,}: {ok[-1]['granary'] / ok[0]['granary']:.2f}x "
                  "(target: at least 0.9x)")  # fmt: skip

    if args.busy:
        for name in [c for c in args.configs.split(",") if c]:
            print_busy(name, busy_rounds(name, depths[0], args.busy))

    if args.topology:
        rounds = topology_rounds(depths)
        print_rounds("The scale-out topology: two API replicas, services, PostgreSQL, Redis, two workers of 8",
                     rounds, places=16)  # fmt: skip
        single = found.get("postgres", {}).get("rounds", [])
        for top, one in zip(rounds, single, strict=False):
            if "failed" not in one:
                print(f"at {top['depth']:,}: the topology {top['granary']:.0f} per minute "
                      f"({top['granary'] / top['bare']:.2f}x bare), one PostgreSQL server {one['granary']:.0f} "
                      f"({one['granary'] / one['bare']:.2f}x bare)")  # fmt: skip

    if args.calls:
        calls, executions = calls_per_execution(args.calls)
        total = sum(calls.values()) / executions
        print(f"\nThe runner's Prefect calls per execution on the embedded default ({executions} due at once, "
              f"each created by a call of the user's besides): {total:.2f}\n")  # fmt: skip
        print("| calls per execution | call | what it buys |")
        print("| --- | --- | --- |")
        for (method, route), count in calls.most_common():
            print(f"| {count / executions:.2f} | `{method} {route}` | {CALLS.get((method, route), '')} |")

    if args.batch:
        result = batch_comparison(args.batch)
        print(
            f"\nAWS Batch on moto, median of {args.batch}: bare boto3 SubmitJob + DescribeJobs loop "
            f"{result['bare']:.2f} s ({result['bare_calls']:.1f} Batch calls); granary execution "
            f"{result['granary']:.2f} s ({result['granary_calls']:.1f} Batch calls): "
            f"{result['granary'] / result['bare']:.2f}x (target: at most 1.2x)\n",
            flush=True,
        )

    if args.s3:
        result = s3_comparison(args.s3)
        print(
            f"\nStoring {sum(OUTPUT_FILES.values()):,} MiB of a Docker task's outputs ({len(OUTPUT_FILES)} files) "
            f"to S3 on moto, median of {args.s3}: granary {result['granary']:.0f} MiB/s; raw s3fs put at the same "
            f"{result['part_mib']:.0f} MiB parts {result['same part size']:.0f} MiB/s "
            f"({result['granary'] / result['same part size']:.2f}x, target: at least 1.0x); at s3fs's default part "
            f"size {result['s3fs default']:.0f} MiB/s ({result['granary'] / result['s3fs default']:.2f}x). moto's "
            f"CPU-s meanwhile: {result['moto granary']:.1f}, {result['moto same part size']:.1f} and "
            f"{result['moto s3fs default']:.1f}\n",
            flush=True,
        )

    if args.compare_prefect_runner:
        compare_runners(args.compare_prefect_runner)

    if args.memory:
        with prefect_server("postgres") as api:
            series = memory_series(api, args.memory)
        print(f"\ngranary worker resident memory over {args.memory} executions (PostgreSQL):")
        print("  " + "  ".join(f"{done}: {mib:.0f} MiB" for done, mib in series))
        later = [mib for done, mib in series if done >= args.memory // 5]
        print(f"  from a fifth of the way on: {min(later):.0f}-{max(later):.0f} MiB ({max(later) / min(later):.2f}x)")


def compare_runners(runs: int, burst: int = 100) -> None:
    """Prefect's own serve() against granary's runner, on SQLite and PostgreSQL."""
    bare = statistics.median(bare_docker_runs(runs))
    results = {}
    for database in ("sqlite", "postgres"):
        with prefect_server(database) as api:
            for runner, prefect_runner in (("Prefect serve()", True), ("granary worker", False)):
                name = f"hello-{database}-{'prefect' if prefect_runner else 'granary'}"
                results[database, runner] = measure(api, name, prefect_runner, runs, burst)
                print(f"measured {runner} on {database}: {results[database, runner]}", flush=True)
    print(f"\nbare docker run of granary/hello:1: median {bare:.3f} s over {runs}\n")
    print(f"| database | runner | latency (median of {runs}) | over bare docker run "
          f"| CPU-s per execution (sequential / burst) | {burst} due at once |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for (database, runner), r in results.items():
        print(
            f"| {database} | {runner} | {r['latency']:.2f} s | +{r['latency'] - bare:.2f} s "
            f"| {r['cpu']:.3f} / {r['cpu_burst']:.3f} | {r['per_minute']:.0f} per minute |"
        )


if __name__ == "__main__":
    main()
