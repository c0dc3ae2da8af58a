import json

import pytest

from granary_flows.contract import environment, parse_plugin_results, parse_progress, variable_name

pytestmark = pytest.mark.unit


def test_variables_follow_seed_naming_and_values_are_json_unless_strings():
    env = environment({"redBand": 3, "tile-id": "33TWN", "bands": [1, 2], "fast": True}, "abc", "ndvi", 2)
    assert env["REDBAND"] == "3" and env["TILE_ID"] == "33TWN" and env["BANDS"] == "[1, 2]" and env["FAST"] == "true"
    assert json.loads(env["GRANARY_ARGUMENTS"]) == {"redBand": 3, "tile-id": "33TWN", "bands": [1, 2], "fast": True}
    assert env["GRANARY_ATTEMPT"] == "2" and env["OUTPUT_DIR"] == "/granary/outputs"
    assert variable_name("nir-band") == "NIR_BAND"


def test_progress_and_plugin_result_lines_are_recognised_and_others_ignored():
    assert parse_progress('{"progress": 42, "message": "tiling"}') == (42.0, "tiling")
    assert parse_progress('{"progress": 250}') == (100.0, None)
    assert parse_progress("progress: 42") is None
    assert parse_plugin_results('{"plugin_results": {"area": 1}}') == {"area": 1}
    assert parse_plugin_results('{"other": 1}') is None
