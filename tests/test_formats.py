"""Tasks written for the systems granary replaces run unmodified: Granary's task documents exactly as its docs show
them, process-api / SEPEX plugins, GRiD-style images, Scale jobs. Seed manifests are in test_seed.py."""

from __future__ import annotations

import json
import shutil

import fsspec
import pytest
from helpers import REFERENCE, ROOT, execute, logs_of, register_definitions, runner_for
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.errors import ArgumentsInvalid, DefinitionError
from granary_flows.loading import load_definition, read_files
from granary_flows.validation import prepare_arguments

cli = CliRunner()
PLUGINS = REFERENCE / "process-api" / "plugins"
# Granary's docs (docs/introduction.md), verbatim: the task document, and the more realistic schema.
GRANARY_TASK = {
    "name": "A descriptive task name",
    "validator": {
        "schema": {
            "$schema": "http://json-schema.org/draft-07/schema",
            "$id": "http://example.com/example.json",
            "type": "object",
            "title": "The Root Schema",
            "description": "The root schema comprises the entire JSON document.",
            "required": ["foo"],
            "properties": {
                "foo": {
                    "$id": "#/properties/foo",
                    "type": "integer",
                    "title": "The Foo Schema",
                    "description": "An explanation about the purpose of this instance.",
                    "default": 0,
                    "examples": [3],
                }
            },
        }
    },
    "jobDefinition": "perfectAccuracyTask:1",
    "jobQueue": "veryExpensiveOnDemandQueue",
}
GRANARY_GEOSPATIAL_SCHEMA = {
    "definitions": {},
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "http://example.com/root.json",
    "type": "object",
    "title": "The Root Schema",
    "required": ["greenBand", "redBand", "tiffLocation"],
    "properties": {
        "greenBand": {
            "$id": "#/properties/greenBand", "type": "integer", "title": "The Greenband Schema", "default": 0,
            "examples": [3],
        },
        "redBand": {
            "$id": "#/properties/redBand", "type": "integer", "title": "The Redband Schema", "default": 0,
            "examples": [2],
        },
        "tiffLocation": {
            "$id": "#/properties/tiffLocation", "type": "string", "title": "The Tifflocation Schema", "default": "",
            "examples": ["s3://cool-bucket/image.tiff"], "format": "uri",
        },
    },
}  # fmt: skip


@pytest.mark.unit
def test_granary_documents_as_its_docs_show_them_are_tasks_named_by_a_slug_of_their_name(tmp_path):
    (tmp_path / "foo.json").write_text(json.dumps(GRANARY_TASK))
    water = GRANARY_TASK | {"name": "Calculate water", "validator": {"schema": GRANARY_GEOSPATIAL_SCHEMA}}
    (tmp_path / "water.json").write_text(json.dumps(water))
    checked = cli.invoke(app, ["check", str(tmp_path)], env={"COLUMNS": "200"})
    assert checked.exit_code == 0, checked.output
    assert "a-descriptive-task-name (from 'A descriptive task name') 1.0.0 (batch, granary)" in checked.output
    assert "calculate-water (from 'Calculate water')" in checked.output
    task = load_definition(tmp_path / "foo.json")
    assert (task.name, task.title, task.runtime.batch.jobQueue) == (
        "a-descriptive-task-name",
        "A descriptive task name",
        "veryExpensiveOnDemandQueue",
    )


@pytest.mark.unit
def test_two_documents_whose_names_slug_alike_are_refused_naming_both(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GRANARY_TASK))
    (tmp_path / "b.json").write_text(json.dumps(GRANARY_TASK | {"name": "A  descriptive task-name!"}))
    loaded, errors = read_files([tmp_path])
    assert len(loaded) == 1
    [error] = errors
    assert str(tmp_path / "b.json") in str(error) and str(tmp_path / "a.json") in str(error)


@pytest.mark.unit
def test_a_required_argument_is_required_whatever_default_its_schema_gives():
    with pytest.raises(ArgumentsInvalid) as refused:
        prepare_arguments("granary", GRANARY_GEOSPATIAL_SCHEMA, {})
    assert refused.value.violations == [
        "$: 'greenBand' is a required property",
        "$: 'redBand' is a required property",
        "$: 'tiffLocation' is a required property",
    ]
    optional = {"type": "object", "properties": {"level": {"type": "integer", "default": 2}}}
    assert prepare_arguments("t", optional, {}) == {"level": 2}  # an optional argument's default is filled in


def test_a_granary_document_runs_unmodified_on_batch(client, aws, batch_runner, tmp_path):
    import create_resources

    create_resources.ensure_queue("veryExpensiveOnDemandQueue")
    create_resources.register_definition("perfectAccuracyTask", "granary/hello:1", ["echo", "foo is", "Ref::foo"])
    (tmp_path / "foo.json").write_text(json.dumps(GRANARY_TASK))
    served = register_definitions(client, [tmp_path / "foo.json"])
    refused = cli.invoke(app, ["run", "a-descriptive-task-name", "--params", "{}"])
    assert refused.exit_code == 1 and "$: 'foo' is a required property" in refused.output
    with runner_for(served, batch_runner.store, batch_runner.runtimes):
        flow_run = execute(client, "a-descriptive-task-name", foo=4)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert "foo is 4" in logs_of(client, flow_run.id)


@pytest.mark.unit
def test_every_reference_process_api_plugin_is_a_task(tmp_path):
    loaded, errors = read_files([PLUGINS])
    assert not errors, errors
    tasks = {entry.definition.name: entry.definition for entry in loaded}
    assert set(tasks) == {"aepGrid", "dfc", "logHelloWorld", "pyecho", "pywrite", "runner"}
    dfc = tasks["dfc"].arguments_schema
    assert dfc["required"] == ["tile", "epoch", "points"]  # minOccurs
    assert dfc["properties"]["points"] == {
        "type": "array",
        "items": {},
        "minItems": 1,
        "maxItems": 999999,
        "title": "points",
    }
    assert tasks["dfc"].runtime.batch.jobDefinition == "process-sandbox:2"
    pyecho = tasks["pyecho"]
    assert (pyecho.runtime.docker.image, pyecho.resources.memory, pyecho.resources.cpus) == ("pyecho:latest", 256, 0.1)
    assert pyecho.jobControlOptions == ["sync-execute", "dismiss"]


@pytest.mark.unit
def test_a_broken_plugin_is_named_by_field_and_line(tmp_path):
    broken = (PLUGINS / "pyecho.yml").read_text().replace("type: local", "type: kubernetes")
    (tmp_path / "pyecho.yml").write_text(broken)
    with pytest.raises(DefinitionError) as refused:
        load_definition(tmp_path / "pyecho.yml")
    line = broken.splitlines().index("  type: kubernetes") + 1
    assert any(
        p.startswith(f"host.type (line {line}):") and "'local' or 'aws-batch'" in p for p in refused.value.problems
    )


def test_process_apis_pyecho_runs_unmodified_and_returns_its_plugin_results(client, runner, docker_runtime):
    from granary_flows.definition import RuntimeKind
    from granary_flows.store import ResultsStore

    served = register_definitions(client, [PLUGINS / "pyecho.yml"])
    with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
        flow_run = execute(client, "pyecho", text="hello from process-api")
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert (document["source"], document["value"]) == ("plugin_results", {"message": "hello from process-api"})


def test_a_grid_style_image_reads_its_arguments_on_stdin_and_writes_to_grid(client, runner):
    flow_run = execute(client, "grid-echo", scene="tile 33TWN")
    assert flow_run.state.is_completed(), flow_run.state.message
    [out] = flow_run.state.result()["results"]
    assert out["title"] == "out.json"
    with fsspec.open(out["href"], "rt") as handle:
        assert json.load(handle) == {"arguments": {"scene": "tile 33TWN", "level": 1}, "by": "grid-echo"}


def test_a_scale_job_reads_its_input_context_and_its_side_car_gives_the_item_its_times(client, runner, tmp_path):
    scene = tmp_path / "scene.txt"
    scene.write_text("pixels\n")
    sidecar = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[12, 41], [13, 41], [13, 42], [12, 42], [12, 41]]]},
        "properties": {"dataStarted": "2018-05-01T00:00:00Z", "dataEnded": "2018-05-02T00:00:00Z"},
    }
    (tmp_path / "scene.txt.metadata.json").write_text(json.dumps(sidecar))
    flow_run = execute(client, "scale-job", INPUT_FILE=scene.as_uri())
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert [a["title"] for a in document["results"]] == ["product", "product.txt.metadata.json"]
    with fsspec.open(document["results_uri"] + "/input-metadata.json", "rt") as handle:  # what the job read
        context = json.load(handle)
    [described] = context["JOB"]["INPUT_FILE"]
    assert described["url"] == scene.as_uri() and described["file_name"] == "scene.txt"
    assert described["file_size"] == 7 and described["media_type"] == "text/plain"
    assert described["data_started"] == "2018-05-01T00:00:00+00:00"
    assert described["geometry"].startswith("POLYGON ((12 41")
    with fsspec.open(document["stac_item"], "rt") as handle:
        item = json.load(handle)
    assert item["properties"]["start_datetime"] == "2018-06-01T00:00:00Z"
    assert item["properties"]["end_datetime"] == "2018-06-01T01:00:00Z"
    assert item["assets"]["product"]["dataTypes"] == ["scale", "test"]


def test_bad_input_to_registration_changes_nothing_already_registered(client, prefect_server, tmp_path):
    from granary_flows.registry import Registry

    good = tmp_path / "keep.yaml"
    shutil.copy(ROOT / "tests" / "tasks" / "sleeper.yaml", good)
    good.write_text(good.read_text().replace("name: sleeper", "name: keep-me"))
    assert cli.invoke(app, ["register", str(good)]).exit_code == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(good.read_text().replace("timeout: 3", "timeout: -1").replace("memory: 32", "memroy: 32"))
    refused = cli.invoke(app, ["register", str(broken)])
    assert refused.exit_code == 1 and "nothing was registered" in refused.output
    assert "timeout (line" in refused.output and "memroy (line" in refused.output
    entry = Registry(client).get("keep-me")
    assert entry is not None and entry.definition["timeout"] == 3


def test_tasks_lists_shows_and_removes_what_is_registered_and_the_runs_stay(client, docker_runtime, tmp_path):
    from granary_flows.definition import RuntimeKind
    from granary_flows.store import ResultsStore

    path = tmp_path / "listed.yaml"
    path.write_text((ROOT / "tests" / "tasks" / "sleeper.yaml").read_text().replace("name: sleeper", "name: listed"))
    assert cli.invoke(app, ["register", str(path)]).exit_code == 0
    listed = cli.invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "listed" in listed.output and "granary-flows" in listed.output
    shown = cli.invoke(app, ["tasks", "show", "listed"])
    assert shown.exit_code == 0 and "image: granary/hello:1" in shown.output
    served = register_definitions(client, [path])
    with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
        ran = execute(client, "listed", duration=0)
    assert ran.state.is_completed(), ran.state.message
    removed = cli.invoke(app, ["tasks", "remove", "listed"])
    assert removed.exit_code == 0 and "its runs stay" in removed.output
    assert cli.invoke(app, ["tasks", "show", "listed"]).exit_code == 1
    assert client.read_flow_run(ran.id).state.is_completed()  # the history stays
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        client.read_deployment_by_name("listed/listed")
