"""The results store: one code path for a local folder and S3 (S3 is tested against moto in test_batch.py)."""

from pathlib import Path

import pytest

from granary_flows import layout
from granary_flows.errors import StorageError
from granary_flows.layout import output_path_in
from granary_flows.outputs import written_files
from granary_flows.policy import Policy
from granary_flows.store import ResultsStore

pytestmark = pytest.mark.unit


def test_outputs_are_stored_under_the_task_and_execution_and_replace_an_earlier_attempt(tmp_path):
    store = ResultsStore(str(tmp_path / "results"))
    first = tmp_path / "first"
    (first / "maps").mkdir(parents=True)
    (first / "maps" / "a.tif").write_text("a")
    (first / "stale.txt").write_text("old")
    store.put_outputs(written_files(first, Policy(max_output_mib=1)).files, "ndvi", "e1")
    second = tmp_path / "second"
    second.mkdir()
    (second / "b.tif").write_text("bb")
    stored = store.put_outputs(written_files(second, Policy(max_output_mib=1)).files, "ndvi", "e1")
    assert stored.uris == {"b.tif": f"{store.root}/ndvi/e1/b.tif"} and stored.sizes == {"b.tif": 2}
    assert sorted(p.name for p in (tmp_path / "results" / "ndvi" / "e1").rglob("*")) == ["b.tif"]
    assert store.list_outputs("ndvi", "e1").uris == stored.uris


def test_documents_are_written_whole_and_read_back(tmp_path):
    store = ResultsStore(str(tmp_path))
    uri = store.write_json(layout.execution_document("t", "e"), {"status": "successful"})
    assert uri == f"{store.root}/t/e/granary-execution.json"
    assert store.read_json("t/e/granary-execution.json") == {"status": "successful"}
    assert not list(Path(tmp_path, "t", "e").glob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        store.read_json("t/none.json")


def test_a_root_that_cannot_be_written_is_said():
    with pytest.raises(StorageError, match="cannot be written"):
        ResultsStore("/proc/granary-cannot-write").check_writable()


def test_links_are_presigned_only_for_the_executions_own_objects():
    own = "s3://results/runs/ndvi/e1"
    assert output_path_in(f"{own}/ndvi.tif", own) == "ndvi.tif"
    assert output_path_in(f"{own}/../e2/ndvi.tif", own) is None
    assert output_path_in("s3://private-bucket/secret.txt", own) is None
    assert output_path_in("s3://results/runs/ndvi/e10/x", own) is None
    credentials = {"key": "k", "secret": "s", "client_kwargs": {"region_name": "us-east-1"}}
    store = ResultsStore("s3://results/runs", credentials)
    assert "Signature=" in (store.presign(f"{own}/ndvi.tif", own) or "")
    for other in (f"{own}/../e2/ndvi.tif", "s3://private-bucket/secret.txt", "s3://results/runs/ndvi/e10/x"):
        assert store.presign(other, own) is None, other
    assert ResultsStore("/tmp/x").presign(f"{own}/ndvi.tif", own) is None  # a local root has no links to sign


def test_a_shared_document_changed_by_many_writers_at_once_keeps_every_change(tmp_path):
    """Each writer adds its own entries to one document at the same time (as executions add their Items to their
    task's STAC Collection): none is lost. (On S3, tests/test_batch.py.)"""
    assert_no_change_lost(ResultsStore(str(tmp_path)))


def assert_no_change_lost(store: ResultsStore, writers: int = 6, each: int = 15) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def add(entry: str) -> None:
        store.update_json("t/shared.json", lambda found: {"entries": [*(found or {"entries": []})["entries"], entry]})

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(add, [f"{writer}-{n}" for writer in range(writers) for n in range(each)]))
    entries = store.read_json("t/shared.json")["entries"]
    assert sorted(entries) == sorted(f"{writer}-{n}" for writer in range(writers) for n in range(each))
