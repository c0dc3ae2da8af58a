"""A pipeline step mapped over N items against the same N items as N separate executions, in one run.

    .venv/bin/python bench/pipeline_map.py [--items 1000] [--concurrency 8]

On a local Prefect server (SQLite) and `granary serve` in a process of its own, the `hello` task runs once per item:
first as N executions created at once (N flow runs, the runner's limit 8 at a time), then as one run of a pipeline
whose single step maps over the N items (`concurrency` at a time). Printed: wall time from creation to the last end,
flow runs and task runs the server holds for each, and the runner's resident memory after each. Then the mapped run
is run again with nothing changed (a resume that reuses all N items), and timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker import create, finished, prefect_api, prefect_server, resident_mib, runner_process, seconds


def count(api: str, what: str, body: dict[str, Any]) -> int:
    return int(prefect_api.post(f"{api}/{what}/count", json=body, timeout=60).json())


def settled_count(api: str, what: str, body: dict[str, Any]) -> int:
    """The count once it has stopped growing for 3 s: task runs reach the server as events, in batches."""
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 3:
        now = count(api, what, body)
        if now != last:
            last, still_since = now, time.monotonic()
        time.sleep(0.5)
    return last


def pipeline(concurrency: int) -> dict[str, Any]:
    names = {"type": "string"}
    return {
        "kind": "pipeline",
        "name": "hello-map",
        "concurrency": concurrency,
        "validator": {"schema": {"type": "object", "properties": {"names": {"type": "array", "items": names}}}},
        "steps": [{"name": "greet", "task": "hello-bench", "map": "${args.names}", "arguments": {"name": "${item}"}}],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    names = [f"item {i}" for i in range(args.items)]

    with prefect_server("sqlite") as api:
        also = {"hello-map": pipeline(args.concurrency)}
        with runner_process(api, "hello-bench", False, also) as (process, task_deployment):
            started = time.time()
            separate = finished(api, [create(api, task_deployment, {"name": name}) for name in names])
            separate_seconds = max(seconds(f["state"]["timestamp"]) for f in separate.values()) - started
            separate_mib = resident_mib(process.pid)

            map_deployment = prefect_api.get(f"{api}/deployments/name/hello-map/hello-map").json()["id"]
            runs_before = count(api, "flow_runs", {})
            started = time.time()
            [mapped] = finished(api, [create(api, map_deployment, {"names": names})]).values()
            map_seconds = seconds(mapped["state"]["timestamp"]) - started
            map_flow_runs = count(api, "flow_runs", {}) - runs_before
            map_task_runs = settled_count(api, "task_runs", {"flow_runs": {"id": {"any_": [mapped["id"]]}}})
            map_mib = resident_mib(process.pid)

            started = time.time()
            of_the_run = {"flow_runs": {"id": {"any_": [mapped["id"]]}}}
            task_runs_before = count(api, "task_runs", of_the_run)
            prefect_api.post(
                f"{api}/flow_runs/{mapped['id']}/set_state",
                json={"state": {"type": "SCHEDULED", "message": "bench: rerun"}, "force": True},
                timeout=60,
            )
            time.sleep(0.5)
            [rerun] = finished(api, [mapped["id"]]).values()
            rerun_seconds = seconds(rerun["state"]["timestamp"]) - started
            rerun_task_runs = settled_count(api, "task_runs", of_the_run) - task_runs_before

    print(f"\n{args.items} items of hello, SQLite, 2 cores\n")
    print("| how | wall time | per item | flow runs | task runs | runner memory after |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.items} separate executions (limit 8) | {separate_seconds:.1f} s "
        f"| {separate_seconds / args.items:.3f} s | {args.items} | {args.items} | {separate_mib:.0f} MiB |"
    )
    print(
        f"| one pipeline run, step mapped (concurrency {args.concurrency}) | {map_seconds:.1f} s "
        f"| {map_seconds / args.items:.3f} s | {map_flow_runs} | {map_task_runs} | {map_mib:.0f} MiB |"
    )
    print(
        f"| the same pipeline run again, every item reused | {rerun_seconds:.1f} s | "
        f"{rerun_seconds / args.items:.3f} s | 0 more | {rerun_task_runs} more | |"
    )
    print(
        f"\nmapped / separate wall time: {map_seconds / separate_seconds:.2f}x; "
        f"rerun with all items reused / first run: {rerun_seconds / map_seconds:.2f}x"
    )


if __name__ == "__main__":
    main()
