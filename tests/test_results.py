"""Result collection from what a container wrote (real files in a folder, as after an attempt)."""

import pytest

from granary_flows.definition import OutputFile
from granary_flows.errors import ExecutionFailed
from granary_flows.outputs import written_files
from granary_flows.policy import Policy
from granary_flows.results import collect
from granary_flows.store import ResultsStore

pytestmark = pytest.mark.unit


def written(tmp_path, *names):
    """Files as a container leaves them, stored the way every execution stores them."""
    local = tmp_path / "outputs"
    local.mkdir()
    for name in names:
        (local / name).write_text(name)
    store = ResultsStore(str(tmp_path / "results"))
    return store.put_outputs(written_files(local, Policy()).files, "task", "execution"), store.read_bytes


def test_declared_outputs_keep_only_matching_files_with_their_side_cars(tmp_path):
    stored, read = written(tmp_path, "a.png", "a.png.metadata.json", "scratch.log")
    collected = collect(stored, read, None, [OutputFile(name="image", pattern="*.png", mediaType="image/png")])
    assert [(a.title, a.roles, a.type) for a in collected.assets] == [
        ("image", ["data"], "image/png"),
        ("a.png.metadata.json", ["metadata"], "application/geo+json"),
    ]


def test_a_missing_required_output_fails_naming_it(tmp_path):
    stored, read = written(tmp_path, "scratch.log")
    with pytest.raises(ExecutionFailed, match=r"required output 'image' \(\*\.png\) was not written"):
        collect(stored, read, None, [OutputFile(name="image", pattern="*.png")])
    optional = collect(stored, read, None, [OutputFile(name="image", pattern="*.png", required=False)])
    assert optional.assets == []


def test_several_matches_for_a_single_output_fail_naming_it(tmp_path):
    stored, read = written(tmp_path, "a.png", "b.png")
    with pytest.raises(ExecutionFailed, match=r"output 'image' \(\*\.png\) matched 2 files but is not 'multiple'"):
        collect(stored, read, None, [OutputFile(name="image", pattern="*.png")])
    several = collect(stored, read, None, [OutputFile(name="image", pattern="*.png", multiple=True)])
    assert len(several.assets) == 2


def test_results_json_names_the_results_and_its_message_fails_the_run(tmp_path):
    local = tmp_path / "outputs"
    local.mkdir()
    (local / "a.png").write_text("png")
    (local / "results.json").write_text('{"results": [{"href": "./a.png", "title": "A"}]}')
    store = ResultsStore(str(tmp_path / "results"))
    stored = store.put_outputs(written_files(local, Policy()).files, "task", "one")
    collected = collect(stored, store.read_bytes, None, [])
    assert [(a.title, a.href) for a in collected.assets] == [("A", f"{store.root}/task/one/a.png")]
    (local / "results.json").write_text('{"message": "the scene is all cloud"}')
    with pytest.raises(ExecutionFailed, match="the container reported failure: the scene is all cloud"):
        collect(store.put_outputs(written_files(local, Policy()).files, "task", "two"), store.read_bytes, None, [])
