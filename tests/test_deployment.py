"""Deployments on a real Prefect server: the run form, updates in place, schedules, Prefect's own CLI and workers."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, api_post, stop_process, wait_final
from prefect.client.schemas.sorting import DeploymentSort
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.loading import read_file
from granary_flows.registry import Registry


def register(client, path: Path):
    return Registry(client).register(read_file(path)).deployment_id


TASK = """name: {name}
description: {description}
version: {version}
validator:
  schema:
    type: object
    required: [name]
    properties:
      name: {{type: string, title: Name}}
      {extra}
runtime:
  docker: {{image: "granary/hello:1", command: [/bin/sh, /app/hello.sh]}}
resources: {{memory: 32}}
tags: {tags}
schedules: {schedules}
"""


def task_file(tmp_path: Path, name: str, **fields) -> Path:
    values = {"description": "first", "version": "1.0.0", "extra": "", "tags": "[a]", "schedules": "[]"} | fields
    path = tmp_path / f"{name}.yaml"
    path.write_text(TASK.format(name=name, **values))
    return path


def test_the_form_schema_is_stored_as_the_ui_needs_it(client, runner):
    deployment = client.read_deployment_by_name("ndvi/ndvi")
    schema = deployment.parameter_openapi_schema
    assert [schema["properties"][n]["title"] for n in ("redBand", "nirBand", "tiffLocation", "outputName")] == [
        "Red band",
        "Near-infrared band",
        "GeoTIFF",
        "Output file name",
    ]
    assert [schema["properties"][n]["position"] for n in ("redBand", "nirBand", "tiffLocation", "outputName")] == [
        0,
        1,
        2,
        3,
    ]
    assert schema["properties"]["outputName"]["default"] == "ndvi.tif"
    assert deployment.enforce_parameter_schema and deployment.version.startswith("1.0.0+")  # + what was registered


def test_registering_an_edited_task_updates_its_deployment_in_place(client, prefect_server, tmp_path):
    first = register(client, task_file(tmp_path, "edited"))
    first_version = client.read_deployment(first).version
    edited = task_file(
        tmp_path,
        "edited",
        description="second",
        version="1.1.0",
        tags="[b, c]",
        extra="times: {type: integer, title: Times}",
        schedules="[{cron: '0 6 * * *', timezone: UTC, parameters: {name: dawn}}]",
    )
    second = register(client, edited)
    assert register(client, edited) == second  # registered again, as a restarted `granary serve` does
    assert first == second
    deployment = client.read_deployment(second)
    assert deployment.description == "second" and deployment.tags == ["b", "c"]
    assert deployment.version.startswith("1.1.0+") and first_version.startswith("1.0.0+")
    assert list(deployment.parameter_openapi_schema["properties"]) == ["name", "times"]
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 6 * * *" and schedule.parameters == {"name": "dawn"}
    assert len([d for d in client.read_deployments(limit=200, sort=DeploymentSort.NAME_ASC) if d.name == "edited"]) == 1

    register(client, task_file(tmp_path, "edited", version="1.2.0"))
    assert client.read_deployment(second).schedules == []


def test_prefect_deployment_run_takes_flat_parameters(client, runner):
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", "hello/hello", "-p", "name=Grace", "-p", "times=2"],
        check=False,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout).group(1)
    flow_run = wait_final(client, flow_run_id)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert flow_run.state.result()["arguments"] == {"name": "Grace", "times": 2}


def test_granary_deploy_targets_a_work_pool_that_prefects_own_worker_runs(client, prefect_server, tmp_path):
    task_file(tmp_path, "pooled")
    deployed = CliRunner().invoke(app, ["deploy", "--pool", "granary-test-pool", "--deployments", str(tmp_path)])
    assert deployed.exit_code == 0, deployed.output
    assert "created work pool granary-test-pool" in deployed.output
    deployment = client.read_deployment_by_name("pooled/pooled")
    assert deployment.work_pool_name == "granary-test-pool"
    assert deployment.entrypoint == "granary_flows.entrypoint:pooled"

    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"name": "pool"})
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "granary-test-pool", "--run-once"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=os.environ,  # no task files: the worker's flow process reads the task from the registry
    )
    final = wait_final(client, flow_run.id, timeout=120)
    assert final.state.is_completed(), (final.state.message, worker.stdout[-2000:], worker.stderr[-2000:])
    assert final.state.result()["results"][0]["title"] == "greeting.txt"


def test_cancelling_a_run_under_granary_worker_subprocess_stops_its_container(
    client, prefect_server, docker_runtime, tmp_path
):
    from prefect.states import Cancelling

    from granary_flows.runtimes.base import LABEL_EXECUTION

    sleeper = (ROOT / "tests" / "tasks" / "sleeper.yaml").read_text()
    (tmp_path / "pooled-sleeper.yaml").write_text(
        sleeper.replace("name: sleeper", "name: pooled-sleeper").replace("timeout: 3", "timeout: 300")
    )
    deployed = CliRunner().invoke(app, ["deploy", "--pool", "granary-cancel-pool", "--deployments", str(tmp_path)])
    assert deployed.exit_code == 0, deployed.output
    deployment = client.read_deployment_by_name("pooled-sleeper/pooled-sleeper")
    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"duration": 300})
    # `granary worker --subprocess` becomes Prefect's own process worker: a Python process per flow run.
    command = ["worker", "--pool", "granary-cancel-pool", "--subprocess"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "granary_flows.cli", *command],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    label = {"label": f"{LABEL_EXECUTION}={flow_run.id}"}
    try:
        deadline = time.monotonic() + 240
        while not docker_runtime.client.containers.list(filters=label):
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.3)
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        final = wait_final(client, flow_run.id, timeout=120)
        assert final.state.is_cancelled()
        assert docker_runtime.client.containers.list(all=True, filters=label) == []
        assert final.infrastructure_pid and f":{worker.pid}:" not in final.infrastructure_pid  # a process of its own
    finally:
        stop_process(worker)


@pytest.mark.quick
def test_a_task_files_schedule_creates_runs_that_complete_under_granary_serve(tmp_path):
    """The scheduler itself (not a test) creates the runs: Prefect's scheduler service on a server of this test's own,
    looking every second, against a schedule every 3 seconds."""
    from helpers import granary_serve, read_until, task_copy

    from granary_flows.server import free_port, local_server

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    task_copy(
        "hello", tmp_path / "tasks", "scheduled-hello", schedules=[{"interval": 3, "parameters": {"name": "tick"}}]
    )
    server_env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}
    with local_server(port=port, extra_env=server_env):
        serve = granary_serve("-d", str(tmp_path / "tasks"), PREFECT_API_URL=api, GRANARY_RESULTS_URI=str(tmp_path))
        try:
            read_until(serve, "waiting for runs", timeout=180)
            deadline = time.monotonic() + 120
            while True:
                completed = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 50, "offset": 0}
                done = [r for r in api_post("/flow_runs/filter", completed, api).json() if r["auto_scheduled"]]
                if len(done) >= 2:
                    break
                assert time.monotonic() < deadline, "no scheduled run completed"
                time.sleep(1)
        finally:
            stop_process(serve)
    assert all(r["parameters"] == {"name": "tick"} and r["created_by"]["type"] == "SCHEDULE" for r in done)
    assert all((tmp_path / "scheduled-hello" / r["id"] / "greeting.txt").read_text() == "Hello, tick!\n" for r in done)


def test_prefect_flow_run_logs_prints_an_executions_logs(client, runner):
    flow_run = wait_final(
        client,
        client.create_flow_run_from_deployment(
            client.read_deployment_by_name("hello/hello").id, parameters={"name": "logs", "times": 2}
        ).id,
    )
    assert flow_run.state.is_completed(), flow_run.state.message
    time.sleep(1)  # logs reach the server in batches
    shown = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "logs", str(flow_run.id)],
        check=False,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    assert "Hello, logs! (1/2)" in shown.stdout and "Hello, logs! (2/2)" in shown.stdout
