"""Pipelines: steps as task runs with real containers, resumption from the failed step, fan-out, conditions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import SAMPLE_TIFF, TEST_TASKS, api_post, containers_of, execute, start, wait_final
from prefect.states import Cancelling
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.store import ResultsStore

cli = CliRunner()


def gate_file(folder: Path, name: str, content: str) -> str:
    path = folder / name
    path.write_text(content + "\n")
    return path.as_uri()


def step_states(client, flow_run_id, since: float = 0.0) -> dict[str, str]:
    """Task run name -> state name, for the pipeline's step task runs created since `since`."""
    from prefect.client.schemas.objects import TaskRun

    deadline = time.monotonic() + 15  # task run states reach the server as events, recorded in batches
    while True:
        time.sleep(1)
        response = api_post(
            "/task_runs/filter", {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}, "limit": 200, "offset": 0}
        )
        runs = [TaskRun.model_validate(item) for item in response.json()]
        steps = [r for r in runs if not r.name.startswith("run-") and r.created.timestamp() >= since]
        if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            return {r.name: r.state.name for r in sorted(steps, key=lambda r: r.created)}


def read(href: str) -> str:
    return ResultsStore().read_bytes(href).decode()


def test_a_failed_pipeline_retried_after_the_fix_runs_only_the_failed_step(client, runner, docker_runtime, tmp_path):
    gate = tmp_path / "gate.txt"
    begun = time.time()
    failed = execute(client, "three-steps", text="hello", gate=gate_file(tmp_path, "gate.txt", "closed"))

    assert failed.state.is_failed()
    assert "third failed" in failed.state.message and "closed, a data error" in failed.state.message
    assert len(containers_of(docker_runtime, failed.id, begun)) == 3
    assert step_states(client, failed.id) == {"first": "Completed", "second": "Completed", "third": "Failed"}

    gate.write_text("open\n")
    retried_at = time.time()
    prefect = Path(sys.executable).parent / "prefect"
    retry = subprocess.run([prefect, "flow-run", "retry", str(failed.id)], check=False, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    final = wait_final(client, failed.id)

    assert final.state.is_completed(), final.state.message
    assert len(containers_of(docker_runtime, failed.id, retried_at)) == 1  # the third step's, not three
    assert step_states(client, failed.id, retried_at) == {"first": "Cached", "second": "Cached", "third": "Completed"}
    document = final.state.result()
    assert document["status"] == "successful" and document["steps"]["first"]["reused"] == [True]
    third = document["steps"]["third"]["results"]
    assert read(third[0]["href"]) == "open\nsecond after 5 characters\nhello\n"


def test_resume_with_a_corrected_argument_reuses_the_steps_it_does_not_reach(client, runner, docker_runtime, tmp_path):
    begun = time.time()
    closed = gate_file(tmp_path, "closed.txt", "closed")
    failed = execute(client, "three-steps", text="hello", gate=closed)
    assert failed.state.is_failed()

    opened = gate_file(tmp_path, "open.txt", "open")
    result = cli.invoke(app, ["resume", str(failed.id), "-p", f"gate={opened}"])
    assert result.exit_code == 0, result.output
    assert f"resuming {failed.id}" in result.output
    resumed_id = result.output.split("execution ")[1].split()[0]
    resumed = wait_final(client, uuid.UUID(resumed_id))

    assert resumed.state.is_completed(), resumed.state.message
    assert f"resumes:{failed.id}" in resumed.tags  # the link back
    assert len(containers_of(docker_runtime, resumed.id, begun)) == 1
    assert step_states(client, resumed.id) == {"first": "Cached", "second": "Cached", "third": "Completed"}
    assert resumed.state.result()["resumes"] == str(failed.id)

    # A change that reaches every step reruns every step, and the resumed run's own reuse is followed.
    again = cli.invoke(app, ["resume", resumed_id, "-p", "text=changed"])
    assert again.exit_code == 0, again.output
    rerun = wait_final(client, uuid.UUID(again.output.split("execution ")[1].split()[0]))
    assert rerun.state.is_completed(), rerun.state.message
    assert step_states(client, rerun.id) == {"first": "Completed", "second": "Completed", "third": "Completed"}
    assert read(rerun.state.result()["steps"]["third"]["results"][0]["href"]).endswith("changed\n")


def test_resume_watch_shows_the_resumed_attempt_and_not_the_failed_one_again(client, runner, tmp_path):
    gate = tmp_path / "gate.txt"
    failed = execute(client, "three-steps", text="watched", gate=gate_file(tmp_path, "gate.txt", "closed"))
    assert failed.state.is_failed()
    gate.write_text("open\n")

    watched = cli.invoke(app, ["resume", str(failed.id), "--watch"])

    assert watched.exit_code == 0, watched.output
    assert "reused execution" in watched.output and "steps of three-steps" in watched.output
    assert "the gate is closed" not in watched.output  # the failed attempt's container said so; it is not news


def test_resume_refuses_an_execution_that_does_not_exist_is_running_or_has_nothing_to_resume(client, runner, tmp_path):
    unknown = cli.invoke(app, ["resume", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "no execution" in unknown.output

    slow = start(client, "slow-pipeline", seconds=30)
    deadline = time.monotonic() + 120
    while client.read_flow_run(slow.id).state.name != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    running = cli.invoke(app, ["resume", str(slow.id)])
    assert running.exit_code == 1 and "is still running" in running.output
    client.set_flow_run_state(slow.id, Cancelling())
    assert wait_final(client, slow.id).state.is_cancelled()

    done = execute(client, "three-steps", text="x", gate=gate_file(tmp_path, "g.txt", "open"))
    assert done.state.is_completed(), done.state.message
    nothing = cli.invoke(app, ["resume", str(done.id)])
    assert nothing.exit_code == 1 and "nothing to resume" in nothing.output


def test_a_mapped_step_runs_one_container_per_item_in_order_and_a_resume_reruns_only_the_failed_item(
    client, runner, docker_runtime, tmp_path
):
    gates = [gate_file(tmp_path, f"gate-{i}.txt", f"open\nitem-{i}") for i in range(4)]
    gates[2] = gate_file(tmp_path, "gate-2.txt", "closed\nitem-2")
    begun = time.time()
    failed = execute(client, "fan-out", gates=gates, word="short")

    assert failed.state.is_failed()
    assert "gates failed: item 2:" in failed.state.message and "together not run" in failed.state.message
    assert len(containers_of(docker_runtime, failed.id, begun)) == 5  # four gates, and measure
    states = step_states(client, failed.id)
    assert [states[f"gates[{i}]"] for i in range(4)] == ["Completed", "Completed", "Failed", "Completed"]
    assert states["long-word"] == "Skipped" and states["after-long-word"] == "Skipped"  # measure said 5, not > 5
    assert "together" not in states

    gate_file(tmp_path, "gate-2.txt", "open\nitem-2")
    retried_at = time.time()
    resumed = cli.invoke(app, ["resume", str(failed.id)])
    assert resumed.exit_code == 0, resumed.output
    final = wait_final(client, failed.id)

    assert final.state.is_completed(), final.state.message
    assert len(containers_of(docker_runtime, failed.id, retried_at)) == 2  # gates[2], then together
    document = final.state.result()
    assert document["steps"]["gates"]["reused"] == [True, True, False, True]
    together = read(document["steps"]["together"]["results"][0]["href"])
    hrefs = json.loads(together.strip().removeprefix("gates: "))
    assert [read(href).splitlines()[1] for href in hrefs] == ["item-0", "item-1", "item-2", "item-3"]


def test_a_condition_on_an_earlier_step_runs_the_step_when_true(client, runner):
    flow_run = execute(client, "fan-out", gates=[], word="a much longer word")
    assert flow_run.state.is_completed(), flow_run.state.message
    steps = flow_run.state.result()["steps"]
    assert steps["long-word"]["status"] == "successful" and steps["after-long-word"]["status"] == "successful"
    assert steps["gates"]["executions"] == [] and steps["together"]["status"] == "successful"


def test_a_reference_that_resolves_to_nothing_fails_its_step_naming_it(client, runner):
    flow_run = execute(client, "missing-result", text="x")
    assert flow_run.state.is_failed()
    assert "${steps.first.value.nothing}" in flow_run.state.message
    assert step_states(client, flow_run.id) == {"first": "Completed", "second": "Failed"}


def test_cancelling_a_pipeline_stops_its_step_containers(client, runner, docker_runtime):
    from granary_flows.runtimes.base import LABEL_FLOW_RUN

    flow_run = start(client, "slow-pipeline", seconds=60)
    label = {"label": f"{LABEL_FLOW_RUN}={flow_run.id}"}
    deadline = time.monotonic() + 180
    while not docker_runtime.client.containers.list(filters=label):
        assert time.monotonic() < deadline, "the step's container never started"
        time.sleep(0.2)
    client.set_flow_run_state(flow_run.id, Cancelling())
    assert wait_final(client, flow_run.id, timeout=60).state.is_cancelled()
    assert docker_runtime.client.containers.list(all=True, filters=label) == []


def test_the_ndvi_tiles_example_computes_ndvi_per_tile_and_a_mosaic_of_the_whole_scene(client, runner, docker_runtime):
    tiles = sorted((SAMPLE_TIFF.parent / "tiles").glob("tile-*.tif"))
    assert len(tiles) == 4, "scripts/setup.sh makes the example tiles"
    begun = time.time()
    flow_run = execute(client, "ndvi-tiles", tiles=[tile.as_uri() for tile in tiles], timeout=180)

    assert flow_run.state.is_completed(), flow_run.state.message
    assert len(containers_of(docker_runtime, flow_run.id, begun)) == 5
    states = step_states(client, flow_run.id)
    assert [states[f"ndvi[{i}]"] for i in range(4)] == ["Completed"] * 4 and states["mosaic"] == "Completed"
    mosaic = _mosaic_of(flow_run)
    statistics = mosaic["value"]
    assert statistics["tiles"] == 4 and statistics["pixels"] == 512 * 512  # the whole scene, from its four quarters
    assert [asset["title"] for asset in mosaic["results"]] == ["mosaic"]
    # The scene in one piece gives the same statistics: cutting it into tiles loses and doubles no pixel.
    whole = execute(client, "ndvi-tiles", tiles=[SAMPLE_TIFF.as_uri()], timeout=180)
    assert whole.state.is_completed(), whole.state.message
    assert _mosaic_of(whole)["value"] | {"tiles": 4} == statistics
    assert 0.3 < statistics["vegetated"] < 0.9 and statistics["min"] < 0 < statistics["max"]  # fields, and water


def _mosaic_of(flow_run):
    return ResultsStore().read_json(
        f"ndvi-mosaic/{flow_run.state.result()['steps']['mosaic']['executions'][0]}/granary-execution.json"
    )


@pytest.mark.unit
def test_check_refuses_unknown_tasks_bad_references_cycles_and_arguments_the_task_cannot_take(tmp_path):
    for task in ("step.yaml", "gate.yaml"):
        (tmp_path / task).write_text((TEST_TASKS / task).read_text())
    (tmp_path / "broken.yaml").write_text(
        """kind: pipeline
name: broken
validator:
  schema: {type: object, properties: {word: {type: string}, count: {type: integer}}}
steps:
  - name: a
    task: step
    arguments: {text: "${steps.b.value}"}
  - name: b
    task: step
    arguments: {text: "${steps.a.value}"}
  - name: c
    task: nowhere
  - name: d
    task: gate
    map: ${args.word}
    arguments: {gate: "${steps.zz.results.out.href}", input: 5}
  - name: e
    task: step
    arguments: {text: "${args.count}"}
    when: "__import__('os').system('true')"
"""
    )
    result = cli.invoke(app, ["check", str(tmp_path)])

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "steps.0.arguments.text (line 8): ${steps.b.value}: the steps form a cycle: a -> b -> a" in output
    assert "steps.2.task (line 13): unknown task 'nowhere' (known tasks: gate, step)" in output
    assert "steps.3.map (line 16): ${args.word}: the argument is a string, not a list" in output
    assert "steps.3.arguments.gate (line 17): ${steps.zz.results.out.href}: there is no step 'zz'" in output
    assert "steps.3.arguments.input (line 17): task 'gate': 5 is not of type 'string'" in output
    assert "steps.4.arguments.text (line 20): gives an integer where task 'step' takes string" in output
    assert "steps.4.when (line 21)" in output and "is not allowed" in output
    assert "ok    " in result.output and "step.yaml" in result.output  # the tasks themselves are fine


def test_cleanup_removes_interim_step_outputs_of_ended_runs_and_keeps_final_results(client, runner, tmp_path):
    flow_run = execute(client, "three-steps", text="tidy", gate=gate_file(tmp_path, "g.txt", "open"))
    assert flow_run.state.is_completed(), flow_run.state.message
    steps = flow_run.state.result()["steps"]
    store = ResultsStore()
    folder = {name: f"{step['task']}/{step['executions'][0]}" for name, step in steps.items()}
    assert all(store.exists(path) for path in folder.values())

    recent = cli.invoke(app, ["cleanup", "--older-than", "1h"])
    assert recent.exit_code == 0 and folder["first"] not in recent.output  # ended just now: not old enough

    dry = cli.invoke(app, ["cleanup", "--older-than", "0s", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert folder["first"] in dry.output and folder["second"] in dry.output and folder["third"] not in dry.output
    assert "would free" in dry.output and all(store.exists(path) for path in folder.values())

    done = cli.invoke(app, ["cleanup", "--older-than", "0s"])
    assert done.exit_code == 0, done.output
    freed = int(done.output.split("freed ")[1].split(" bytes")[0].replace(",", ""))
    assert freed > 0
    assert not store.exists(folder["first"]) and not store.exists(folder["second"])
    assert store.exists(folder["third"])  # the final result stays
    collection = store.read_json("step/collection.json")
    assert not any(folder["first"].split("/")[1] in link["href"] for link in collection["links"])
