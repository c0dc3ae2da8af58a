from pathlib import Path

import pytest

from granary_flows.errors import DefinitionError, ErrorCategory, UnknownTask
from granary_flows.loading import find_definition, load_definition, load_definitions

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_example_task_loads_with_its_runtime_and_policies():
    ndvi = load_definition(ROOT / "deployments" / "ndvi.yaml")
    assert ndvi.name == "ndvi" and ndvi.image == "granary/ndvi:1"
    assert ndvi.argument_names == ["redBand", "nirBand", "tiffLocation", "outputName"]
    assert ndvi.retries.on == [ErrorCategory.SYSTEM]
    assert ndvi.errors[3].category is ErrorCategory.DATA


def test_a_granary_task_document_becomes_a_batch_task(tmp_path):
    path = write(
        tmp_path,
        '{"name": "water", "jobDefinition": "water:2", "jobQueue": "gpu-spot",'
        ' "validator": {"schema": {"type": "object", "properties": {"scene": {"type": "string"}}}}}',
        "water.json",
    )
    task = load_definition(path)
    assert task.runtime_kind == "batch"
    assert task.runtime.batch.jobDefinition == "water:2" and task.runtime.batch.jobQueue == "gpu-spot"


def test_a_broken_file_names_each_field_at_fault_with_its_line(tmp_path):
    path = write(
        tmp_path, "name: bad name\nvalidator:\n  schema: {type: object}\nruntime:\n  docker: {image: x}\ntimout: 3\n"
    )
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert str(path) in str(caught.value)
    assert any(p.startswith("name (line 1):") for p in caught.value.problems)
    assert "timout (line 6): unknown field" in caught.value.problems


def test_a_nul_character_anywhere_in_a_definition_is_named_with_its_line():
    from granary_flows.loading import read_definition

    text = (
        'name: x\ndescription: "a\\0b"\nvalidator:\n  schema:\n    type: object\n    properties:\n'
        '      n: {type: string, enum: [ok, "n\\0"]}\nruntime: {docker: {image: granary/hello:1}}\n'
    )
    with pytest.raises(DefinitionError) as refused:
        read_definition(text, "request")
    said = str(refused.value)
    assert "description (line 2): contains the NUL character" in said
    assert "validator.schema.properties.n.enum.1 (line 7): contains the NUL character" in said
    assert "\x00" not in said


def test_a_schema_that_is_not_a_valid_json_schema_is_refused_with_its_path(tmp_path):
    path = write(
        tmp_path,
        "name: t\nvalidator:\n  schema:\n    type: object\n    properties:\n"
        "      a: {type: strin}\nruntime:\n  docker: {image: x}\n",
    )
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert caught.value.problems[0].startswith("validator.schema.properties.a.type (line 6): not a valid JSON Schema")


def test_the_schema_is_checked_against_its_own_draft(tmp_path):
    # exclusiveMinimum is a boolean in draft-04 and a number in draft-07
    draft04 = (
        "name: t\nvalidator:\n  schema:\n    $schema: 'http://json-schema.org/draft-04/schema#'\n"
        "    type: object\n    properties:\n      a: {type: number, minimum: 0, exclusiveMinimum: true}\n"
        "runtime:\n  docker: {image: x}\n"
    )
    assert load_definition(write(tmp_path, draft04)).name == "t"
    with pytest.raises(DefinitionError, match="exclusiveMinimum"):
        load_definition(write(tmp_path, draft04.replace("draft-04", "draft-07")))


def test_yaml_syntax_errors_name_the_line(tmp_path):
    with pytest.raises(DefinitionError, match=r"line 4: expected .,. or .}."):
        load_definition(write(tmp_path, "name: t\nvalidator:\n  schema: {type: object\nruntime: x\n"))


def test_argument_names_must_be_usable_as_parameters(tmp_path):
    path = write(
        tmp_path,
        "name: t\nvalidator:\n  schema:\n    type: object\n    properties:\n"
        "      band-name: {type: string}\nruntime:\n  docker: {image: x}\n",
    )
    with pytest.raises(DefinitionError, match="band-name"):
        load_definition(path)


def test_schedule_parameters_are_validated_against_the_task_schema(tmp_path):
    path = write(
        tmp_path,
        "name: t\nvalidator:\n  schema:\n    type: object\n    required: [n]\n    properties:\n"
        "      n: {type: integer}\nruntime:\n  docker: {image: x}\n"
        "schedules:\n  - cron: '0 6 * * *'\n    parameters: {n: many}\n",
    )
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert caught.value.problems == ["schedules.0.parameters (line 12): $.n: 'many' is not of type 'integer'"]


def test_a_runtime_needs_exactly_one_of_docker_or_batch(tmp_path):
    with pytest.raises(DefinitionError, match="exactly one of 'docker' or 'batch'"):
        load_definition(write(tmp_path, "name: t\nvalidator: {schema: {type: object}}\nruntime: {}\n"))


def test_broken_files_are_reported_beside_the_good_ones_and_duplicates_refused(tmp_path):
    write(tmp_path, "name: a\nvalidator: {schema: {type: object}}\nruntime: {docker: {image: x}}\n", "a.yaml")
    write(tmp_path, "name: a\nvalidator: {schema: {type: object}}\nruntime: {docker: {image: y}}\n", "b.yaml")
    write(tmp_path, "- not a mapping\n", "c.yaml")
    definitions, errors = load_definitions([tmp_path])
    assert [d.name for d in definitions] == ["a"]
    assert sorted(Path(e.path).name for e in errors) == ["b.yaml", "c.yaml"]


def test_an_unknown_task_lists_the_known_ones():
    definitions, _ = load_definitions([ROOT / "deployments"])
    known = ", ".join(sorted(d.name for d in definitions))
    with pytest.raises(UnknownTask, match=rf"no task named .nope. \(known tasks: {known}\)"):
        find_definition("nope", [ROOT / "deployments"])
