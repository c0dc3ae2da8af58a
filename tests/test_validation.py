import pytest

from granary_flows.errors import ArgumentsInvalid
from granary_flows.validation import prepare_arguments, violations

pytestmark = pytest.mark.unit

SCHEMA = {
    "type": "object",
    "required": ["redBand", "tiffLocation"],
    "properties": {
        "redBand": {"type": "integer", "minimum": 1},
        "tiffLocation": {"type": "string", "format": "uri"},
        "when": {"type": "string", "format": "date-time"},
        "tiles": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]{2}[A-Z]{3}$"}},
        "level": {"type": "integer", "default": 2},
    },
}


def test_every_violation_is_reported_with_its_json_path():
    found = violations(
        SCHEMA, {"redBand": 0, "tiffLocation": "not a uri", "when": "yesterday", "tiles": ["33TWN", "bad"]}
    )
    assert found == [
        "$.redBand: 0 is less than the minimum of 1",
        "$.tiffLocation: 'not a uri' is not a 'uri'",
        "$.tiles[1]: 'bad' does not match '^[0-9]{2}[A-Z]{3}$'",
        "$.when: 'yesterday' is not a 'date-time'",
    ]


def test_a_missing_required_argument_is_named():
    assert violations(SCHEMA, {"redBand": 3}) == ["$: 'tiffLocation' is a required property"]


def test_what_prefects_database_cannot_store_is_named_even_when_the_schema_allows_it():
    anything = {"type": "object"}
    found = violations(anything, {"note": "a\x00b", "deep": [{"k\x00": 2**70}], "ok": "fine"})
    assert found == [
        "$.note: contains the NUL character (\\u0000), which Prefect's database cannot store",
        "$.deep[0].k: a key contains the NUL character (\\u0000), which Prefect's database cannot store",
        "$.deep[0].k\\u0000: 1180591620717411303424 is larger than a 64-bit integer",
    ]
    assert not any("\x00" in line for line in violations({"maxLength": 1}, "a\x00"))  # messages stay storable


def test_the_draft_comes_from_the_schema():
    draft04 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}},
    }
    assert violations(draft04, {"n": 5}) == ["$.n: 5 is greater than or equal to the maximum of 5"]
    draft07_dependencies = {"type": "object", "dependencies": {"a": ["b"]}}
    assert violations(draft07_dependencies, {"a": 1}) == ["$: 'b' is a dependency of 'a'"]


def test_prepared_arguments_drop_empty_optionals_and_fill_defaults_without_changing_the_input():
    given = {"redBand": 3, "tiffLocation": "file:///data/scene.tif", "when": None}
    prepared = prepare_arguments("ndvi", SCHEMA, given)
    assert prepared == {"redBand": 3, "tiffLocation": "file:///data/scene.tif", "level": 2}
    assert given["when"] is None


def test_invalid_arguments_raise_with_every_violation():
    with pytest.raises(ArgumentsInvalid) as caught:
        prepare_arguments("ndvi", SCHEMA, {"redBand": "three"})
    assert caught.value.violations == [
        "$: 'tiffLocation' is a required property",
        "$.redBand: 'three' is not of type 'integer'",
    ]
    assert "invalid arguments for task 'ndvi'" in str(caught.value)
