import copy
import json
from pathlib import Path

import pytest

from granary_flows.form import parameter_schema
from granary_flows.loading import load_definition

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def test_every_field_has_a_title_and_keeps_the_task_order():
    form = parameter_schema(load_definition(ROOT / "deployments" / "ndvi.yaml").arguments_schema)
    assert form["title"] == "Parameters"
    assert [(name, spec["position"], spec["title"]) for name, spec in form["properties"].items()] == [
        ("redBand", 0, "Red band"),
        ("nirBand", 1, "Near-infrared band"),
        ("tiffLocation", 2, "GeoTIFF"),
        ("outputName", 3, "Output file name"),
    ]
    assert form["properties"]["outputName"]["default"] == "ndvi.tif"
    assert form["required"] == ["redBand", "nirBand", "tiffLocation"]
    assert "$schema" not in json.dumps(form)


def test_shapes_the_ui_cannot_render_are_rewritten_and_the_input_is_untouched():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "required": ["mode"],
        "$defs": {"box": {"type": "object", "properties": {"west": {"type": "number"}}}},
        "properties": {
            "mode": {"oneOf": [{"const": "fast"}, {"const": "exact"}]},
            "cloud_cover": {"type": ["number", "null"]},
            "bbox": {"$ref": "#/$defs/box"},
            "tiles": {"type": "array", "items": {"type": "string"}},
            "pair": {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]},
            "zoom": {"type": "integer", "examples": [12, 14]},
        },
    }
    original = copy.deepcopy(schema)
    form = parameter_schema(schema)
    props = form["properties"]
    assert schema == original
    assert props["mode"]["enum"] == ["fast", "exact"] and props["mode"]["title"] == "Mode"
    assert props["cloud_cover"]["title"] == "Cloud cover"
    assert props["cloud_cover"]["anyOf"] == [{"type": "number", "title": "Cloud cover"}, {"type": "null"}]
    assert props["bbox"]["$ref"] == "#/definitions/box"
    assert form["definitions"]["box"]["properties"]["west"]["title"] == "West"
    assert props["tiles"]["anyOf"][1] == {"type": "null"} and props["tiles"]["default"] is None
    assert [item["type"] for item in props["pair"]["anyOf"][0]["prefixItems"]] == ["integer", "string"]
    assert props["zoom"]["description"] == "(e.g. 12, 14)"
