"""granary's in-process worker against Prefect's own `serve()` and a bare `docker run`, in one run, per database.

    .venv/bin/python bench/worker.py [--runs 10] [--burst 100] [--memory 1000] [--databases sqlite,postgres]
                                     [--depths 100,2000] [--batch 5] [--s3 3]

For each database (a local Prefect server on SQLite, then one on PostgreSQL from Debian's programs), the same `hello`
execution is run by `granary serve --subprocess` (Prefect's Runner: a Python process per flow run, polling every
second) and by `granary serve` (granary's in-process runner), each a process of its own. Printed per database and
runner: the median latency of `--runs` executions one after the other (creation -> Completed, from the server's own
timestamps), CPU-seconds per execution of the runner's process and the processes it started (from /proc), and the
throughput of `--burst` executions due at the same moment. The baseline is the median of `--runs` bare `docker run`s
of the same image, command, output mount and sandbox, through the docker SDK. Last, granary's runner executes `--memory`
executions on PostgreSQL and its resident memory is printed every tenth of the way.

First, before those: for each of `--depths`, that many executions due at the same moment on PostgreSQL, run by
granary's runner 8 at a time, against as many sandboxed bare `docker run`s 8 at a time (throughput of each, the
runner's and the Prefect server's CPU per execution, the runner's memory once 200 are done); and `--batch` executions
of hello on moto's Batch against a bare boto3 SubmitJob + DescribeJobs loop at the same backoff (median wall time and
Batch calls of each); and `--s3` times a Docker task writing 1 GiB of outputs (9 files) to an S3 root on moto, the
store step as its run logs it, against a raw s3fs `put` of the same files written by the same command in the same
sandbox, at granary's part size and at s3fs's default (MiB/s of each, and moto's CPU meanwhile). An empty
`--databases` runs only these.
"""

from __future__ import annotations

import argparse
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

from granary_flows.runtimes.docker import docker_client  # noqa: E402
from granary_flows.server import free_port, local_server  # noqa: E402
from tests.postgres import local_postgres  # noqa: E402
from tests.rest import request  # noqa: E402


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
    out.mkdir()
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
    out.mkdir()
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


def depth_series(api: str, depths: list[int]) -> list[dict[str, float]]:
    """granary's runner at each depth (that many executions due at the same moment) against bare `docker run`s of
    as many, both 8 at a time; with the runner's and the server's CPU per execution."""
    found = []
    for depth in depths:
        bare = bare_docker_throughput(depth)
        print(f"measured bare docker runs, {depth:,} 8 at a time: {bare:.0f} per minute", flush=True)
        with runner_process(api, f"hello-depth-{depth}", False) as (process, deployment_id):
            finished(api, [create(api, deployment_id, {"name": "warm"})])
            due = datetime.now(timezone.utc) + timedelta(seconds=10 + depth * 0.1)
            ids = [create(api, deployment_id, {"name": f"deep {i}"}, due) for i in range(depth)]
            assert datetime.now(timezone.utc) < due, "the executions took longer to create than their lead time"
            runner_cpu, server_cpu = cpu_seconds(process.pid), server_cpu_seconds(api)
            memory: list[tuple[int, float]] = []
            watching = threading.Event()
            watcher = threading.Thread(target=_watch_memory, args=(api, deployment_id, process.pid, memory, watching))
            watcher.start()
            done = finished(api, ids)
            watching.set()
            watcher.join()
            last = max(seconds(f["state"]["timestamp"]) for f in done.values())
            later = [mib for count, mib in memory if count >= 200]
            found.append({
                "depth": depth, "bare": bare, "granary": depth / (last - due.timestamp()) * 60,
                "runner_cpu": (cpu_seconds(process.pid) - runner_cpu) / depth,
                "server_cpu": (server_cpu_seconds(api) - server_cpu) / depth,
                "memory_from": min(later, default=0.0), "memory_to": max(later, default=0.0),
            })  # fmt: skip
        print(f"measured depth {depth}: {found[-1]}", flush=True)
    return found


def _watch_memory(api: str, deployment_id: str, pid: int, into: list[tuple[int, float]], stop: threading.Event) -> None:
    """(executions completed, the runner's resident MiB) every 2 s until `stop`."""
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
    while not stop.wait(2):
        response = httpx.post(f"{api}/flow_runs/count", json=body, timeout=60)
        if response.status_code == 200:
            into.append((int(response.json()), resident_mib(pid)))


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
        deployment = httpx.get(f"{api}/deployments/name/{name}/{name}").json()
        yield process, deployment["id"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def create(api: str, deployment_id: str, parameters: dict[str, Any], due: datetime | None = None) -> str:
    body: dict[str, Any] = {"parameters": parameters}
    if due:
        body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}}
    url = f"{api}/deployments/{deployment_id}/create_flow_run"
    return request("POST", url, body, timeout=60).json()["id"]


FINAL = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def finished(api: str, flow_run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """id -> flow run, once every one of them is final.

    Only runs that became final are read, and a large set is looked at once a second: reading every pending run ten
    times a second made the server serialize 2,000 runs a second at a depth of 2,000, and it was the harness, not
    the runner, that slowed the server down as the queue deepened.
    """
    done: dict[str, dict[str, Any]] = {}
    pause = 0.1 if len(flow_run_ids) <= 10 else 1.0
    while len(done) < len(flow_run_ids):
        pending = [i for i in flow_run_ids if i not in done]
        response = httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"id": {"any_": pending}, "state": {"type": {"any_": FINAL}}}, "limit": 200},
            timeout=60,
        )
        if response.status_code != 200:  # a busy SQLite server answers 503, or an empty 500, now and then
            time.sleep(0.2)
            continue
        for flow_run in response.json():
            if flow_run["state"]["type"] in FINAL:
                if flow_run["state"]["type"] != "COMPLETED":
                    logs = httpx.post(
                        f"{api}/logs/filter",
                        json={
                            "logs": {"flow_run_id": {"any_": [flow_run["id"]]}},
                            "limit": 200,
                            "sort": "TIMESTAMP_ASC",
                        },
                    ).json()
                    raise RuntimeError("\n".join([str(flow_run["state"])] + [log["message"] for log in logs]))
                done[flow_run["id"]] = flow_run
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
        messages = [log["message"] for log in httpx.post(f"{api}/logs/filter", json=body, timeout=60).json()]
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
def prefect_server(database: str) -> Any:
    with ExitStack() as stack:
        extra = {"PREFECT_HOME": str(WORK / f"prefect-{database}")}
        if database == "postgres":
            extra["PREFECT_API_DATABASE_CONNECTION_URL"] = stack.enter_context(local_postgres(free_port()))
        yield stack.enter_context(local_server(port=free_port(), extra_env=extra, log_file=WORK / f"{database}.log"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="executions one after the other, for the latency")
    parser.add_argument("--burst", type=int, default=100, help="executions due at the same moment")
    parser.add_argument("--memory", type=int, default=1000, help="executions while memory is watched (0: skip)")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--batch", type=int, default=5, help="executions on moto's Batch, against a bare loop (0: skip)"
    )
    parser.add_argument("--s3", type=int, default=3, help="1 GiB stores to S3 on moto, against s3fs (0: skip)")
    parser.add_argument("--depths", default="100,2000", help="executions due at once, on PostgreSQL (empty: skip)")
    args = parser.parse_args()

    depths = [int(depth) for depth in args.depths.split(",") if depth]
    if depths:
        with prefect_server("postgres") as api:
            series = depth_series(api, depths)
        print("\n| due at once (PostgreSQL) | bare docker run, 8 at a time | granary runner, 8 at a time | ratio "
              "| runner CPU-s / execution | server CPU-s / execution | runner memory after 200 done |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for row in series:
            print(f"| {row['depth']:,} | {row['bare']:.0f} per minute | {row['granary']:.0f} per minute "
                  f"| {row['granary'] / row['bare']:.2f}x | {row['runner_cpu']:.3f} | {row['server_cpu']:.3f} "
                  f"| {row['memory_from']:.0f}-{row['memory_to']:.0f} MiB |")  # fmt: skip
        if len(series) > 1:
            print(
                f"granary at {series[-1]['depth']:,} / at {series[0]['depth']:,}: "
                f"{series[-1]['granary'] / series[0]['granary']:.2f}x (target: at least 0.9x)\n",
                flush=True,
            )

    if args.batch:
        found = batch_comparison(args.batch)
        print(
            f"\nAWS Batch on moto, median of {args.batch}: bare boto3 SubmitJob + DescribeJobs loop "
            f"{found['bare']:.2f} s ({found['bare_calls']:.1f} Batch calls); granary execution "
            f"{found['granary']:.2f} s ({found['granary_calls']:.1f} Batch calls): "
            f"{found['granary'] / found['bare']:.2f}x (target: at most 1.2x)\n",
            flush=True,
        )

    if args.s3:
        found = s3_comparison(args.s3)
        print(
            f"\nStoring {sum(OUTPUT_FILES.values()):,} MiB of a Docker task's outputs ({len(OUTPUT_FILES)} files) "
            f"to S3 on moto, median of {args.s3}: granary {found['granary']:.0f} MiB/s; raw s3fs put at the same "
            f"{found['part_mib']:.0f} MiB parts {found['same part size']:.0f} MiB/s "
            f"({found['granary'] / found['same part size']:.2f}x, target: at least 1.0x); at s3fs's default part "
            f"size {found['s3fs default']:.0f} MiB/s ({found['granary'] / found['s3fs default']:.2f}x). moto's "
            "CPU-s meanwhile: "
            f"{found['moto granary']:.1f}, {found['moto same part size']:.1f} and {found['moto s3fs default']:.1f}\n",
            flush=True,
        )

    databases = [database for database in args.databases.split(",") if database]
    if not databases:
        return
    bare = statistics.median(bare_docker_runs(args.runs))
    results = {}
    for database in databases:
        with prefect_server(database) as api:
            for runner, prefect_runner in (("Prefect serve()", True), ("granary worker", False)):
                name = f"hello-{database}-{'prefect' if prefect_runner else 'granary'}"
                results[database, runner] = measure(api, name, prefect_runner, args.runs, args.burst)
                print(f"measured {runner} on {database}: {results[database, runner]}", flush=True)

    print(f"\nbare docker run of granary/hello:1: median {bare:.3f} s over {args.runs}\n")
    header = f"| database | runner | latency (median of {args.runs}) | over bare docker run |"
    header += f" CPU-s per execution (sequential / burst) | {args.burst} due at once |"
    print(header)
    print("| --- | --- | --- | --- | --- | --- |")
    for (database, runner), r in results.items():
        print(
            f"| {database} | {runner} | {r['latency']:.2f} s | +{r['latency'] - bare:.2f} s "
            f"| {r['cpu']:.3f} / {r['cpu_burst']:.3f} | {r['per_minute']:.0f} per minute |"
        )
    for database in databases:
        prefect, granary = results[database, "Prefect serve()"], results[database, "granary worker"]
        print(
            f"\n{database}: granary / Prefect serve(): latency {granary['latency'] / prefect['latency']:.2f}x, "
            f"CPU {granary['cpu_burst'] / prefect['cpu_burst']:.2f}x, "
            f"throughput {granary['per_minute'] / prefect['per_minute']:.1f}x"
        )

    if args.memory:
        database = "postgres" if "postgres" in args.databases else "sqlite"
        with prefect_server(database) as api:
            series = memory_series(api, args.memory)
        print(f"\ngranary worker resident memory over {args.memory} executions ({database}):")
        print("  " + "  ".join(f"{done}: {mib:.0f} MiB" for done, mib in series))
        later = [mib for done, mib in series if done >= args.memory // 5]
        print(f"  from a fifth of the way on: {min(later):.0f}-{max(later):.0f} MiB ({max(later) / min(later):.2f}x)")


if __name__ == "__main__":
    main()
