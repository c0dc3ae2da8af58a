"""Executions end to end: real Prefect server, in-process runner, real containers on the Docker engine."""

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import SAMPLE_TIFF, artifacts_of, containers_of, execute, logs_of, start, task_runs_of, wait_final
from prefect.exceptions import PrefectHTTPStatusError


def stored_files(results_root: Path, task: str, flow_run_id) -> list[str]:
    folder = results_root / task / str(flow_run_id)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def local_path(href: str) -> Path:
    return Path(urlparse(href).path)


@pytest.mark.quick
def test_hello_runs_end_to_end_with_results_artifacts_and_logs(client, runner, results_root):
    flow_run = execute(client, "hello", name="Ada", times=3)
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert document["status"] == "successful" and document["execution_id"] == str(flow_run.id)
    assert document["arguments"] == {"name": "Ada", "times": 3}
    [asset] = document["results"]
    assert asset["title"] == "greeting" and asset["type"] == "text/plain"
    assert local_path(asset["href"]).read_text() == "Hello, Ada!\n"
    assert stored_files(results_root, "hello", flow_run.id) == [
        "granary-execution.json",
        "granary-item.json",
        "greeting.txt",
    ]

    # One artifact: the report (results, links, summary). Its progress, reported and done within a second, is not
    # shown apart: it would only repeat the report.
    shown = [a for a in artifacts_of(client, flow_run.id) if a.type is not None]  # not Prefect's persisted result
    assert [(a.type, a.key) for a in shown] == [("markdown", "hello-results")]
    [report] = [a.data for a in shown]
    # The greeting opens from the run page: a link `granary api` serves (GRANARY_API_URL), not a file:// address.
    link = f"[greeting]({os.environ['GRANARY_API_URL']}/jobs/{flow_run.id}/outputs/greeting.txt"
    assert link in report and "Hello, Ada! (3/3)" in report  # and its last log lines
    logs = logs_of(client, flow_run.id)
    assert [line for line in logs if line.startswith("Hello")] == [
        "Hello, Ada! (1/3)",
        "Hello, Ada! (2/3)",
        "Hello, Ada! (3/3)",
    ]


def test_a_container_reporting_progress_hundreds_of_times_shows_every_line_and_its_last_progress(client, runner):
    # The progress artifact is written off the log stream, folding the updates that arrive while one is being sent:
    # the run must still end with every line in its logs and the artifact at the last progress reported. (It runs
    # on for 1.5 s after: the progress of a container that is still running a second later is shown.)
    flow_run = execute(client, "hello", name="Bo", times=500, sleep=1.5)
    assert flow_run.state.is_completed(), flow_run.state.message
    progress = next(a for a in artifacts_of(client, flow_run.id) if a.type == "progress")
    assert progress.data == 100 and progress.description == "greeted 500 of 500"
    greetings = [line for line in logs_of(client, flow_run.id) if line.startswith("Hello")]
    assert greetings == [f"Hello, Bo! ({i}/500)" for i in range(1, 501)]


@pytest.mark.quick
def test_ndvi_computes_a_geotiff_and_its_footprint_from_a_real_scene(client, runner):
    flow_run = execute(client, "ndvi", redBand=3, nirBand=4, tiffLocation=SAMPLE_TIFF.as_uri())
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert document["arguments"]["tiffLocation"] == SAMPLE_TIFF.as_uri()  # the original URI, not the staged path
    by_title = {a["title"]: a for a in document["results"]}
    assert by_title["ndvi"]["type"] == "image/tiff; application=geotiff"
    assert local_path(by_title["ndvi"]["href"]).read_bytes()[:4] in (b"II*\x00", b"MM\x00*")
    sidecar = json.loads(local_path(by_title["ndvi.tif.metadata.json"]["href"]).read_text())
    assert by_title["ndvi.tif.metadata.json"]["roles"] == ["metadata"]
    [[west, south], *_] = sidecar["geometry"]["coordinates"][0]
    assert round(west, 3) == 15.0 and round(south, 2) == 41.96  # UTM 33N, 500000 E / 4650000 N, 5.12 km a side
    assert 0.7 < sidecar["properties"]["ndvi:max"] <= 1.0


def test_invalid_arguments_fail_with_every_violation_and_start_no_container(client, runner, docker_runtime):
    since = time.time()
    # As from the UI with its validation switched off: our own check in the flow is the one that counts.
    flow_run = execute(client, "ndvi", server_checks=False, redBand=0, tiffLocation="not a uri", outputName="x.png")
    assert flow_run.state.is_failed()
    assert "'not a uri' is not a 'uri'" in flow_run.state.message
    assert "$.outputName: 'x.png' does not match" in flow_run.state.message
    assert "$.redBand: 0 is less than the minimum of 1" in flow_run.state.message
    assert "$: 'nirBand' is a required property" in flow_run.state.message
    assert containers_of(docker_runtime, flow_run.id, since) == []


def test_the_server_refuses_what_the_form_schema_forbids_before_a_run_exists(client, runner):
    with pytest.raises(PrefectHTTPStatusError, match="outputName"):
        start(client, "ndvi", redBand=3, nirBand=4, tiffLocation=SAMPLE_TIFF.as_uri(), outputName="x.png")


def test_a_uri_the_server_does_not_check_is_caught_before_any_container(client, runner, docker_runtime):
    since = time.time()
    flow_run = execute(client, "ndvi", redBand=3, nirBand=4, tiffLocation="not a uri")
    assert flow_run.state.is_failed() and "$.tiffLocation: 'not a uri' is not a 'uri'" in flow_run.state.message
    assert containers_of(docker_runtime, flow_run.id, since) == []


def test_a_transient_failure_is_retried_and_leaves_only_the_last_attempts_outputs(client, runner, results_root):
    flow_run = execute(client, "flaky", succeedOn=3)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert flow_run.state.result()["attempts"] == 3
    assert stored_files(results_root, "flaky", flow_run.id) == [
        "attempt-3.txt",
        "granary-execution.json",
        "granary-item.json",
    ]
    [task_run] = task_runs_of(client, flow_run.id)
    assert task_run.run_count == 3
    assert any("attempt 3 of 4" in line for line in logs_of(client, flow_run.id))


def test_a_data_error_is_named_and_never_retried(client, runner, docker_runtime):
    since = time.time()
    flow_run = execute(client, "bad-data")
    assert flow_run.state.is_failed()
    assert "exit code 3 (corrupt-input, a data error)" in flow_run.state.message
    assert len(containers_of(docker_runtime, flow_run.id, since)) == 1
    summary = next(a for a in artifacts_of(client, flow_run.id) if a.key == "bad-data-summary")
    assert "the input is corrupt" in summary.data and "| exit code | `3` |" in summary.data


def test_the_timeout_kills_the_container_and_says_so(client, runner, docker_runtime):
    started = time.monotonic()
    flow_run = execute(client, "sleeper", duration=60)
    assert flow_run.state.is_failed()
    assert "timed out after 3 s" in flow_run.state.message
    assert time.monotonic() - started < 30
    assert docker_runtime.stop(str(flow_run.id)) == 0  # nothing left behind


def test_an_out_of_memory_kill_is_detected_and_said(client, runner):
    flow_run = execute(client, "hog")
    assert flow_run.state.is_failed()
    assert "out of memory (limit 32 MiB)" in flow_run.state.message


def test_a_missing_image_fails_clearly(client, runner):
    flow_run = execute(client, "missing-image")
    assert flow_run.state.is_failed()
    assert "image 'granary/not-built:404' is not on this Docker engine" in flow_run.state.message


def test_a_last_plugin_results_line_gives_the_results(client, runner):
    assets = execute(client, "reporter", how="plugin-results").state.result()
    [asset] = assets["results"]
    assert asset["title"] == "the map" and asset["href"].endswith(f"/reporter/{assets['execution_id']}/map.tif")
    value = execute(client, "reporter", how="plugin-value").state.result()
    assert value["source"] == "plugin_results" and value["value"] == {"area_km2": 12.5}
    assert sorted(a["title"] for a in value["results"]) == ["map.tif", "notes.txt"]  # a value leaves the files


def test_cancelling_a_run_stops_its_container_and_ends_cancelled(client, runner, docker_runtime):
    from prefect.states import Cancelling

    flow_run = start(client, "sleeper", duration=2.5)  # under the 3 s timeout, long enough to cancel
    deadline = time.monotonic() + 120
    while not (
        client.read_flow_run(flow_run.id).state.is_running()
        and docker_runtime.client.containers.list(filters={"label": f"granary.execution-id={flow_run.id}"})
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client.set_flow_run_state(flow_run.id, Cancelling())
    final = wait_final(client, flow_run.id, timeout=60)
    assert final.state.is_cancelled(), final.state
    assert (
        docker_runtime.client.containers.list(all=True, filters={"label": f"granary.execution-id={flow_run.id}"}) == []
    )
