"""Which interim results `granary cleanup` removes, from pipeline documents in a results folder."""

from datetime import datetime, timedelta, timezone

import pytest

from granary_flows import layout
from granary_flows.cleanup import interim_results, parse_age, remove
from granary_flows.store import ResultsStore

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)


def run(store, execution_id: str, status: str, ended_days_ago: float | None, steps: dict) -> None:
    finished = NOW - timedelta(days=ended_days_ago) if ended_days_ago is not None else None
    document = {
        "execution_id": execution_id,
        "pipeline": "chain",
        "version": "1",
        "status": status,
        "arguments": {},
        "steps": {
            name: {"task": task, "status": "successful", "keep": keep, "executions": executions}
            for name, (task, keep, executions) in steps.items()
        },
        "started": (NOW - timedelta(days=30)).isoformat(),
        "finished": finished.isoformat() if finished else None,
    }
    store.write_json(layout.pipeline_document("chain", execution_id), document)
    store.write_json(layout.step_record("chain", execution_id, "k"), {"step": "x"})
    for _, (task, _, executions) in steps.items():
        for each in executions:
            store.write_json(layout.execution_document(task, each), {"execution_id": each})


def test_interim_outputs_of_old_runs_go_and_final_ones_and_shared_ones_stay(tmp_path):
    store = ResultsStore(str(tmp_path))
    run(store, "old", "successful", 10, {"a": ("step", False, ["e1", "shared"]), "b": ("mosaic", True, ["e2"])})
    run(store, "recent", "failed", 0.1, {"a": ("step", False, ["shared"])})
    run(store, "going", "running", None, {"a": ("step", False, ["e3"])})
    removals = interim_results(store, timedelta(days=5), now=NOW)
    assert sorted(r.relative for r in removals) == ["chain/old/steps", "step/e1"]
    freed = remove(store, removals)
    assert freed == sum(r.bytes for r in removals) > 0
    assert not store.exists("step/e1") and store.exists("step/shared") and store.exists("mosaic/e2")


def test_ages_are_read_with_their_unit():
    assert parse_age("12h") == timedelta(hours=12) and parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError, match="is not an age"):
        parse_age("5 days")
