"""One contract, every runtime: the same task run on local Docker and on AWS Batch (moto, whose jobs are real
containers) reports its results, fails, names its exit codes and is cancelled the same way."""

from __future__ import annotations

import time
from typing import Any

import fsspec
import pytest
from helpers import QUEUE, execute, logs_of, start, wait_final

TASKS = {"docker": "docker-probe", "batch": "batch-probe"}


@pytest.fixture(params=["docker", "batch"])
def runtime(request, runner) -> str:
    if request.param == "batch":
        request.getfixturevalue("batch_runner")
    return request.param


def read(href: str) -> str:
    with fsspec.open(href, "rt") as handle:
        return handle.read()


def test_results_json_names_the_results(client, runtime):
    flow_run = execute(client, TASKS[runtime], write=["a.txt", "b.txt"], results=True)
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    [asset] = document["results"]
    assert (document["source"], asset["title"], asset["roles"]) == ("results.json", "named", ["data"])
    assert asset["href"].endswith(f"/{TASKS[runtime]}/{flow_run.id}/a.txt")
    assert read(asset["href"]) == "a.txt from attempt 1\n"


def test_without_results_json_every_output_file_is_a_result(client, runtime):
    document = execute(client, TASKS[runtime], write=["a.txt", "b.txt"]).state.result()
    assert document["source"] == "files"
    assert sorted(a["title"] for a in document["results"]) == ["a.txt", "b.txt", "environment.json"]


def test_a_results_json_message_fails_the_execution_with_that_message(client, runtime):
    flow_run = execute(client, TASKS[runtime], message="the scene is all cloud")
    assert flow_run.state.is_failed()
    assert "the container reported failure: the scene is all cloud" in flow_run.state.message


def test_a_last_plugin_results_line_is_the_value(client, runtime):
    document = execute(client, TASKS[runtime], plugin=True).state.result()
    assert (document["source"], document["value"]) == ("plugin_results", {"answer": 42, "attempt": 1})


def test_an_exit_code_is_named_by_the_tasks_errors_and_a_data_error_is_not_retried(client, runtime):
    """The probe retries `job` and `system` errors: its exit code 3 is a `data` error, any other a `job` error."""
    flow_run = execute(client, TASKS[runtime], exit=3)
    assert flow_run.state.is_failed()
    assert "exit code 3 (bad-data, a data error): the input cannot be read" in flow_run.state.message
    said = logs_of(client, flow_run.id)
    assert any("attempt=1" in line for line in said) and not any("attempt=2" in line for line in said), said
    retried = execute(client, TASKS[runtime], exit=4)
    assert retried.state.is_failed() and "exit code 4" in retried.state.message
    assert any("attempt=2" in line for line in logs_of(client, retried.id))


def test_cancelling_stops_what_runs_and_ends_cancelled(client, runtime, docker_runtime):
    from prefect.states import Cancelling

    flow_run = start(client, TASKS[runtime], sleep=60)
    deadline = time.monotonic() + 180
    while not _running(runtime, flow_run.id, docker_runtime):
        assert time.monotonic() < deadline, "it never started"
        time.sleep(0.2)
    client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
    asked = time.monotonic()
    final = wait_final(client, flow_run.id, timeout=60)
    assert final.state.is_cancelled(), final.state
    assert time.monotonic() - asked < 10
    assert not _running(runtime, flow_run.id, docker_runtime)


def _running(runtime: str, flow_run_id: Any, docker_runtime: Any) -> bool:
    if runtime == "docker":
        label = {"label": f"granary.execution-id={flow_run_id}"}
        return bool(docker_runtime.client.containers.list(filters=label))
    import boto3

    batch = boto3.client("batch")
    name = f"granary-batch-probe-{flow_run_id}"
    summaries = batch.list_jobs(jobQueue=QUEUE, filters=[{"name": "JOB_NAME", "values": [name]}])["jobSummaryList"]
    return any(summary["status"] == "RUNNING" for summary in summaries)
