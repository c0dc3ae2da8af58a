"""Seed manifests as tasks: checked like the Seed 1.0 schema, executed with Seed's semantics in real containers."""

import copy
import json
from pathlib import Path

import pytest
import yaml
from helpers import REFERENCE, artifacts_of, execute, logs_of
from jsonschema import Draft4Validator
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.errors import DefinitionError
from granary_flows.form import parameter_schema
from granary_flows.formats.seed import expand_command, outputs_from, parse_manifest
from granary_flows.loading import load_definition
from granary_flows.seed_manifest import JsonValue

SEED = REFERENCE / "seed"
EXAMPLES = sorted((SEED / "examples").glob("*/seed.manifest.json"))
SEED_SCHEMA = json.loads((SEED / "schema" / "seed.manifest.schema.json").read_text())


def lcg_sum(count: int, seed: int = 1) -> int:
    """What the example's random.sh computes."""
    total, state = 0, seed
    for _ in range(count):
        state = (state * 1103515245 + 12345) % 2147483648
        total += state % 100
    return total


@pytest.mark.unit
def test_all_three_reference_manifests_register_with_the_form_a_user_expects():
    tasks = {path.parent.name: load_definition(path) for path in EXAMPLES}
    assert set(tasks) == {"complete", "random-number", "watermark"}
    complete, watermark = tasks["complete"], tasks["watermark"]
    assert (complete.name, complete.version, complete.timeout) == ("my-job", "1.0.0", 3600)
    assert complete.image == "my-job-1.0.0-seed:1.0.0"  # Seed's image naming convention
    form = parameter_schema(complete.arguments_schema)
    assert {name: (spec["title"], spec.get("format")) for name, spec in form["properties"].items()} == {
        "INPUT_FILE": ("Input file", "uri"),
        "INPUT_JSON": ("Input json", None),
    }
    assert form["required"] == ["INPUT_FILE", "INPUT_JSON"]
    assert (complete.resources.memory, complete.resources.sharedMemory, complete.resources.cpus) == (1024, 1024, 1)
    assert complete.errors[1].category.value == "data" and complete.errors[2].name == "error-name-two"
    assert [(o.name, o.multiple, o.required) for o in complete.outputs.files] == [
        ("output_file_pngs", True, True),
        ("output_file_csv", False, False),
    ]
    assert complete.seed.command == "${INPUT_FILE} ${OUTPUT_DIR} ${VERSION}"
    assert watermark.arguments_schema["properties"]["INPUT_IMAGE"]["format"] == "uri"
    assert tasks["random-number"].argument_names == []


BREAKAGES = {
    "job.maintainer": lambda m: m["job"].pop("maintainer"),
    "job.name": lambda m: m["job"].update(name="my job!"),
    "job.jobVersion": lambda m: m["job"].update(jobVersion="1.0"),
    "job.errors.0.category": lambda m: m["job"]["errors"][0].update(category="algorithm"),
    "job.interface.inputs.json.0.type": lambda m: m["job"]["interface"]["inputs"]["json"][0].update(type="float"),
    "seedVersion": lambda m: m.update(seedVersion="2.0.0"),
}


@pytest.mark.unit
@pytest.mark.parametrize("field", BREAKAGES)
def test_a_manifest_that_breaks_the_seed_schema_is_refused_naming_the_field(field):
    manifest = json.loads((SEED / "examples" / "complete" / "seed.manifest.json").read_text())
    assert not list(Draft4Validator(SEED_SCHEMA).iter_errors(manifest))
    broken = copy.deepcopy(manifest)
    BREAKAGES[field](broken)
    assert list(Draft4Validator(SEED_SCHEMA).iter_errors(broken)), "the reference schema refuses it too"
    with pytest.raises(DefinitionError) as caught:
        parse_manifest(broken, "seed.manifest.json")
    assert any(problem.startswith(field) for problem in caught.value.problems), caught.value.problems


@pytest.mark.unit
def test_a_broken_manifest_in_a_task_file_is_named_with_its_line(tmp_path):
    manifest = json.loads((SEED / "examples" / "watermark" / "seed.manifest.json").read_text())
    manifest["job"]["jobVersion"] = "1.0"
    manifest["job"]["interface"]["inputs"]["files"][0]["name"] = "OUTPUT_DIR"
    task = tmp_path / "watermark.yaml"
    task.write_text(yaml.safe_dump({"seed": {"image": "x:1", "manifest": manifest}}, sort_keys=False))
    lines = task.read_text().splitlines()
    version_line = next(i for i, text in enumerate(lines, 1) if "jobVersion" in text)
    input_line = next(i for i, text in enumerate(lines, 1) if "name: OUTPUT_DIR" in text)
    with pytest.raises(DefinitionError) as caught:
        load_definition(task)
    assert caught.value.problems[0].startswith(f"job.jobVersion (line {version_line}): String should match pattern")
    manifest["job"]["jobVersion"] = "1.0.0"
    task.write_text(yaml.safe_dump({"seed": {"image": "x:1", "manifest": manifest}}, sort_keys=False))
    with pytest.raises(DefinitionError) as caught:
        load_definition(task)
    assert caught.value.problems == [
        f"job.interface.inputs.files.0.name (line {input_line}): "
        "'OUTPUT_DIR' collides with the reserved variable OUTPUT_DIR"
    ]


@pytest.mark.unit
def test_input_names_that_collide_with_reserved_or_each_other_are_refused():
    manifest = json.loads((SEED / "examples" / "watermark" / "seed.manifest.json").read_text())
    manifest["job"]["interface"]["inputs"]["files"][0]["name"] = "OUTPUT_DIR"
    with pytest.raises(DefinitionError, match="collides with the reserved variable OUTPUT_DIR"):
        parse_manifest(manifest, "m")
    manifest["job"]["interface"]["inputs"]["files"] = [{"name": "in-put"}, {"name": "in_put"}]
    with pytest.raises(DefinitionError, match="are both the variable IN_PUT"):
        parse_manifest(manifest, "m")


@pytest.mark.unit
def test_the_command_is_expanded_as_seed_and_a_shell_would():
    variables = {"IN": "/in/a b.png", "FLAG": "7", "OUTPUT_DIR": "/out"}
    assert expand_command("run ${IN} ${FLAG/#/-d } $OUTPUT_DIR", variables) == ["run", "/in/a b.png", "-d", "7", "/out"]
    assert expand_command("run ${IN} ${UNSET/#/-d } ${OUTPUT_DIR}", variables) == ["run", "/in/a b.png", "/out"]


@pytest.mark.unit
def test_json_outputs_are_read_by_key_and_required_ones_must_be_there():
    declared = [
        JsonValue(name="cell_count", key="cellCount", type="integer"),
        JsonValue(name="dummy", type="integer", required=False),
    ]
    assert outputs_from({"cellCount": 3}, declared) == {"cell_count": 3}
    with pytest.raises(ValueError, match="required JSON output 'cell_count' \\(key 'cellCount'\\)"):
        outputs_from({"dummy": 1}, declared)


def test_import_seed_writes_a_task_file_from_the_image_label(tmp_path):
    target = tmp_path / "imported.yaml"
    result = CliRunner().invoke(app, ["import-seed", "granary/seed-random:1", "--output", str(target)])
    assert result.exit_code == 0, result.output
    task = load_definition(target)
    assert (task.name, task.version, task.image) == ("random-number", "0.2.0", "granary/seed-random:1")
    assert task.seed.command == "/app/random.sh ${COUNT} ${SEED/#/-s } ${OUTPUT_DIR}"
    refused = CliRunner().invoke(app, ["import-seed", "granary/hello:1", "--output", str(tmp_path / "x.yaml")])
    assert refused.exit_code == 1 and "has no com.ngageoint.seed.manifest label" in refused.output


def test_the_seed_example_runs_with_seed_variables_settings_mounts_and_json_outputs(client, runner):
    flow_run = execute(client, "random-number", COUNT=5, SEED=7)
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert document["outputs"] == {"total": lcg_sum(5, 7)}
    numbers = Path(document["results"][0]["href"].removeprefix("file://")).read_text().split()
    assert len(numbers) == 5 and sum(map(int, numbers)) == lcg_sum(5, 7)
    logs = logs_of(client, flow_run.id)
    assert "allocated: cpus=0.5 mem=32 sharedMem=16" in logs
    assert "label: example; token: none" in logs
    assert "reference: reference data mounted read-only" in logs
    assert f"wrote 5 numbers, sum {lcg_sum(5, 7)}" in logs


def test_an_optional_switch_left_out_is_left_out_of_the_command(client, runner):
    document = execute(client, "random-number", COUNT=3).state.result()
    assert document["outputs"] == {"total": lcg_sum(3)}  # no "-s": the script's default seed


def test_a_seed_error_code_is_named_with_its_category(client, runner):
    flow_run = execute(client, "random-number", COUNT=0)
    assert flow_run.state.is_failed()
    assert "exit code 3 (bad-count, a data error): COUNT must be positive" in flow_run.state.message


def test_multiple_input_files_are_staged_into_one_folder(client, runner, tmp_path):
    uris = []
    for name in ("nouns.txt", "verbs.txt"):
        (tmp_path / name).write_text(name)
        uris.append((tmp_path / name).as_uri())
    flow_run = execute(client, "random-number", COUNT=1, WORD_LISTS=uris)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert "word lists: nouns.txt verbs.txt " in logs_of(client, flow_run.id)


def test_a_secret_setting_comes_from_a_secret_block_and_never_shows(client, runner):
    from prefect.blocks.system import Secret

    Secret(value="s3cr3t-value-42").save("granary-test-token", overwrite=True)
    flow_run = execute(client, "random-secret", COUNT=2)
    assert flow_run.state.is_completed(), flow_run.state.message
    logs = logs_of(client, flow_run.id)
    assert "label: secret-run; token: ****" in logs
    assert not any("s3cr3t-value-42" in line for line in logs)
    assert not any("s3cr3t-value-42" in json.dumps(a.data) for a in artifacts_of(client, flow_run.id))


def test_an_input_annotation_is_kept_apart_from_the_outputs_footprint_and_allocation_grows_with_inputs(
    client, runner, tmp_path
):
    scene = tmp_path / "scene.bin"
    scene.write_bytes(b"\0" * 1024 * 1024)
    flow_run = execute(client, "annotate", SCENE=scene.as_uri())
    assert flow_run.state.is_completed(), flow_run.state.message
    assert "disk=14" in logs_of(client, flow_run.id)  # 10 + 4 x 1 MiB
    document = flow_run.state.result()
    annotation = next(r for r in document["results"] if r["title"] == "SCENE annotation")
    assert annotation["roles"] == ["metadata"] and annotation["description"] == "annotates the input SCENE"
    item = json.loads(Path(document["stac_item"].removeprefix("file://")).read_text())
    assert item["geometry"] == {"type": "Point", "coordinates": [1.0, 2.0]}  # the output's, not the input's
    assert item["properties"]["granary:annotated_inputs"] == ["SCENE"]
