import json
import time

import pytest

from granary_flows.artifacts import PROGRESS_AFTER, ProgressArtifact
from granary_flows.contract import parse_plugin_results, parse_progress, variable_name
from granary_flows.definition import TaskDefinition
from granary_flows.invocation import invocation_for

pytestmark = pytest.mark.unit


def task(**docker) -> TaskDefinition:
    spec = {"image": "granary/hello:1"} | docker
    return TaskDefinition.model_validate(
        {"name": "t", "validator": {"schema": {"type": "object"}}, "runtime": {"docker": spec}}
    )


def test_variables_follow_seed_naming_and_values_are_json_unless_strings():
    arguments = {"redBand": 3, "tile-id": "33TWN", "bands": [1, 2], "fast": True}
    env = invocation_for(task(), arguments, execution_id="abc", attempt=2).environment
    assert env["REDBAND"] == "3" and env["TILE_ID"] == "33TWN" and env["BANDS"] == "[1, 2]" and env["FAST"] == "true"
    assert json.loads(env["GRANARY_ARGUMENTS"]) == arguments
    assert env["GRANARY_ATTEMPT"] == "2" and env["OUTPUT_DIR"] == "/granary/outputs"
    assert env["GRANARY_ARGUMENTS_FILE"] == "/granary/arguments.json"
    assert variable_name("nir-band") == "NIR_BAND"


def test_each_convention_delivers_the_arguments_its_own_way():
    arguments = {"text": "hi", "n": 2}
    process_api = invocation_for(
        task(command=["python", "main.py"], arguments=["last-argument"]), arguments, execution_id="e", attempt=1
    )
    assert process_api.command == ["python", "main.py", '{"text": "hi", "n": 2}']
    assert "GRANARY_ARGUMENTS" not in process_api.environment and process_api.arguments_file is None
    grid = invocation_for(
        task(arguments=["stdin"], outputDir="/grid", entrypoint=["/bin/run"]), arguments, execution_id="e", attempt=1
    )
    assert grid.stdin == '{"text": "hi", "n": 2}' and grid.command is None and grid.entrypoint == ["/bin/run"]
    assert grid.output_path == "/grid" and grid.environment["OUTPUT_DIR"] == "/grid"


def test_progress_and_plugin_result_lines_are_recognised_and_others_ignored():
    assert parse_progress('{"progress": 42, "message": "tiling"}') == (42.0, "tiling")
    assert parse_progress('{"progress": 250}') == (100.0, None)
    assert parse_progress("progress: 42") is None
    assert parse_plugin_results('{"plugin_results": {"area": 1}}') == {"area": 1}
    assert parse_plugin_results('{"other": 1}') is None


def test_progress_reported_while_the_artifact_is_being_written_is_folded_into_the_newest_and_flush_waits_for_it():
    # The real writes go to a Prefect server (test_execution); here a slow one makes the folding certain.
    written: list[tuple[float, str]] = []

    class SlowServer(ProgressArtifact):
        def _write(self, percent: float, description: str) -> None:
            time.sleep(0.2)
            written.append((percent, description))

    progress = SlowServer("hello")
    progress.update(1, "step 1")
    time.sleep(PROGRESS_AFTER + 0.05)  # the first write is under way
    for percent in range(2, 101):
        progress.update(percent, f"step {percent}")
    progress.flush()
    assert written[-1] == (100, "step 100")
    assert len(written) <= 2 and [p for p, _ in written] == sorted({p for p, _ in written})


def test_the_progress_of_a_container_that_ends_within_a_second_of_reporting_it_is_not_written():
    written: list[float] = []

    class Server(ProgressArtifact):
        def _write(self, percent: float, description: str) -> None:
            written.append(percent)

    progress = Server("hello")
    for percent in (10, 50, 100):
        progress.update(percent, None)
    started = time.monotonic()
    progress.flush()
    assert written == [] and time.monotonic() - started < 0.5  # and the run does not wait for it
