"""The embedded default's freeze on a busy machine, and each variant of what this repository controls.

    .venv/bin/python bench/freeze.py [--variants fix,prefect,read-only-look,database-timeout] [--rounds 3]
                                     [--creations 60] [--hogs 2]

Issue 34's case: a Prefect server on SQLite as `granary server start` runs it, `granary serve --limit 8` on it, and
each round `--creations` runs of `hello` created at once by as many clients (a 30 s timeout, as Prefect's client has),
while `--hogs` busy loops keep the cores busy. A probe asks the server to count runs every quarter of a second. Per
round: the slowest answer the probe got, the creations that timed out, the runs that ended, and how long the round
took. When an answer takes over 8 s, py-spy (when on the PATH) dumps the server's threads, native frames included,
into the variant's folder: that is how the cause was found.

Variants, each a server and a runner of its own:
- `fix`: the server run by `granary_flows.server_process` (the collector on a thread of its own), as granary runs it;
- `prefect`: the server run by Prefect's own `prefect` command, automatic collection on the event loop's thread;
- `read-only-look`: `prefect`, and the runner looking for due runs with `POST /flow_runs/filter` instead of
  `get_scheduled_flow_runs` (which schedules Prefect's `mark_deployments_ready` writes);
- `database-timeout`: `prefect`, with `PREFECT_SERVER_DATABASE_TIMEOUT=5` (SQLite's connect timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from rest import one_credential, prefect_http, request  # noqa: E402

one_credential()
import httpx  # noqa: E402

from granary_flows.server import SERVER_PROCESS, free_port, server_environment, wait_until  # noqa: E402

PYTHON = sys.executable
PATIENCE = 30.0  # seconds a client waits, as Prefect's own client does
STALL = 8.0  # seconds: an answer slower than this has the server's threads dumped
# The runner's look for due runs through a read-only filter: what `read-only-look` runs instead of `granary serve`.
READ_ONLY_LOOK = """
import sys
from datetime import datetime, timedelta, timezone
from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
    FlowRunFilterNextScheduledStartTime, FlowRunFilterState, FlowRunFilterStateType)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from granary_flows import runner
from granary_flows.cli import app

def look(self, client):
    now = datetime.now(timezone.utc)
    asked, served = 2 * self.limit, self.catalog.deployment_ids(client)
    due = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
            before_=now + timedelta(seconds=self._poll_every())))
    runs = client.read_flow_runs(flow_run_filter=due, deployment_filter=DeploymentFilter(
        id=DeploymentFilterId(any_=served)), sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=asked)
    self._due.found(runs if served else [], asked, now)

runner.InProcessRunner._look = look
sys.argv[0] = "granary"
app()
"""
VARIANTS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "fix": (SERVER_PROCESS, ["-m", "granary_flows.cli"], {}),
    "prefect": ("prefect", ["-m", "granary_flows.cli"], {}),
    "read-only-look": ("prefect", ["-c", READ_ONLY_LOOK], {}),
    "database-timeout": ("prefect", ["-m", "granary_flows.cli"], {"PREFECT_SERVER_DATABASE_TIMEOUT": "5"}),
}


class Probe:
    """Asks the server to count runs every quarter of a second; dumps its threads when an answer is slow."""

    def __init__(self, api: str, server_pid: int, folder: Path):
        self.api, self.server_pid, self.folder = api, server_pid, folder
        self.times: list[float] = []
        self.asking_since: float | None = None
        self.dumps = 0
        self._stop = threading.Event()
        self._http = prefect_http(timeout=120)

    def __enter__(self) -> Probe:
        threading.Thread(target=self._ask, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()

    def _ask(self) -> None:
        while not self._stop.wait(0.25):
            self.asking_since = time.perf_counter()
            try:
                self._http.post(f"{self.api}/flow_runs/count", json={})
            except httpx.HTTPError as err:
                print(f"probe: {err!r}", flush=True)
            self.times.append(time.perf_counter() - self.asking_since)
            self.asking_since = None

    def _watch(self) -> None:
        dumped_for = None
        while not self._stop.wait(1):
            since = self.asking_since
            if since is None or since == dumped_for or time.perf_counter() - since < STALL or self.dumps >= 3:
                continue
            dumped_for, self.dumps = since, self.dumps + 1
            py_spy = shutil.which("py-spy")
            if py_spy:
                dump = subprocess.run(
                    [py_spy, "dump", "--native", "-p", str(self.server_pid)], capture_output=True, check=False
                )
                (self.folder / f"server-threads-{self.dumps}.txt").write_bytes(dump.stdout + dump.stderr)

    def slowest(self) -> float:
        found = max(self.times, default=0.0)
        self.times.clear()
        return found


def run_variant(name: str, rounds: int, creations: int, hogs: int, work: Path) -> list[dict]:
    server_module, serve_command, extra = VARIANTS[name]
    folder = work / name
    (folder / "tasks").mkdir(parents=True)
    shutil.copy(ROOT / "deployments" / "hello.yaml", folder / "tasks" / "hello.yaml")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    environment = (
        os.environ
        | extra
        | {
            "PREFECT_HOME": str(folder / "prefect"),
            "GRANARY_HOME": str(folder / "home"),
            "GRANARY_RESULTS_URI": str(folder / "results"),
        }
    )
    server_env = server_environment(environment)
    server_env.pop("PREFECT_API_URL", None)
    command = [PYTHON, "-m", server_module, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(folder / "server.log", "wb") as server_log, open(folder / "serve.log", "wb") as serve_log:
        server = subprocess.Popen(command, env=server_env, stdout=server_log, stderr=subprocess.STDOUT)
        serve = None
        hogging = []
        try:
            wait_until(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, "the server", server, 120)
            serve = subprocess.Popen(
                [PYTHON, *serve_command, "serve", "-d", str(folder / "tasks"), "--limit", "8"],
                env=environment | {"PREFECT_API_URL": api}, stdout=serve_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            wait_until(lambda: b"waiting for runs" in (folder / "serve.log").read_bytes(), "granary serve", serve, 180)
            http = prefect_http(timeout=120)
            deployment = http.get(f"{api}/deployments/name/hello/hello").json()["id"]
            hogging = [subprocess.Popen([PYTHON, "-c", "while True: pass"]) for _ in range(hogs)]
            with Probe(api, server.pid, folder) as probe:
                return [_round(api, http, deployment, index, creations, probe) for index in range(rounds)]
        finally:
            for hog in hogging:
                hog.kill()
            if serve is not None:
                serve.send_signal(signal.SIGINT)
                try:
                    serve.wait(30)
                except subprocess.TimeoutExpired:
                    serve.kill()
            server.terminate()
            server.wait(30)


def _round(api: str, http: httpx.Client, deployment: str, index: int, creations: int, probe: Probe) -> dict:
    errors: list[str] = []

    def create(number: int) -> str | None:
        body = {"parameters": {"name": f"r{index}-{number}"}}
        try:
            created = request("POST", f"{api}/deployments/{deployment}/create_flow_run", body, timeout=PATIENCE)
            return created.json()["id"]
        except httpx.HTTPStatusError as err:
            errors.append(str(err.response.status_code))
            return None
        except httpx.HTTPError as err:
            errors.append(type(err).__name__)
            return None

    started = time.perf_counter()
    with ThreadPoolExecutor(creations) as pool:
        ids = [found for found in pool.map(create, range(creations)) if found]
    ended = 0
    final = {"flow_runs": {"id": {"any_": ids}, "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}}
    while time.perf_counter() - started < 600:
        with contextlib.suppress(httpx.HTTPError):
            ended = int(http.post(f"{api}/flow_runs/count", json=final).json())
        if ended >= len(ids):
            break
        time.sleep(1)
    seconds = round(time.perf_counter() - started, 1)
    found = {"round": index + 1, "created": len(ids), "ended": ended, "creation errors": dict(Counter(errors)),
             "seconds": seconds, "slowest answer": round(probe.slowest(), 2)}  # fmt: skip
    print(json.dumps(found), flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="fix,prefect,read-only-look,database-timeout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creations", type=int, default=60)
    parser.add_argument("--hogs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="granary-freeze-"))
    print(f"work folder: {work}")
    found = {name: run_variant(name, args.rounds, args.creations, args.hogs, work) for name in args.variants.split(",")}
    print("\n| variant | round | created | ended | creation errors | seconds | slowest answer |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rounds in found.items():
        for r in rounds:
            errors = ", ".join(f"{count} {kind}" for kind, count in r["creation errors"].items()) or "0"
            print(f"| {name} | {r['round']} | {r['created']} | {r['ended']} | {errors} "
                  f"| {r['seconds']} | {r['slowest answer']:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
