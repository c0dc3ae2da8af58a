"""Result collection from what a container wrote (real files in a folder, as after an attempt)."""

import pytest

from granary_flows.definition import OutputFile
from granary_flows.errors import ExecutionFailed
from granary_flows.results import collect

pytestmark = pytest.mark.unit


def written(tmp_path, *names):
    for name in names:
        (tmp_path / name).write_text(name)
    return {name: (tmp_path / name).as_uri() for name in names}


def test_declared_outputs_keep_only_matching_files_with_their_side_cars(tmp_path):
    stored = written(tmp_path, "a.png", "a.png.metadata.json", "scratch.log")
    collected = collect(tmp_path, stored, None, [OutputFile(name="image", pattern="*.png", mediaType="image/png")])
    assert [(a.title, a.roles, a.type) for a in collected.assets] == [
        ("image", ["data"], "image/png"),
        ("a.png.metadata.json", ["metadata"], "application/geo+json"),
    ]


def test_a_missing_required_output_fails_naming_it(tmp_path):
    stored = written(tmp_path, "scratch.log")
    with pytest.raises(ExecutionFailed, match=r"required output 'image' \(\*\.png\) was not written"):
        collect(tmp_path, stored, None, [OutputFile(name="image", pattern="*.png")])
    optional = collect(tmp_path, stored, None, [OutputFile(name="image", pattern="*.png", required=False)])
    assert optional.assets == []


def test_several_matches_for_a_single_output_fail_naming_it(tmp_path):
    stored = written(tmp_path, "a.png", "b.png")
    with pytest.raises(ExecutionFailed, match=r"output 'image' \(\*\.png\) matched 2 files but is not 'multiple'"):
        collect(tmp_path, stored, None, [OutputFile(name="image", pattern="*.png")])
    several = collect(tmp_path, stored, None, [OutputFile(name="image", pattern="*.png", multiple=True)])
    assert len(several.assets) == 2
