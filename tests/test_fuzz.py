"""Argument fuzzing, against the real runner and server: hundreds of generated payloads through `granary run` and
through Prefect's REST API (with the server's own check switched off, as the UI's form allows). No invalid payload
starts a container; every run ends in a final state; the runner goes on serving."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from helpers import api_post
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.loading import find_definition
from granary_flows.validation import violations

cli = CliRunner()


def payloads(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**25), max_value=10**25)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text(max_size=30)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )
    names = st.sampled_from(["name", "times", "sleep"]) | text(min_size=1, max_size=8)
    return st.dictionaries(names, values, max_size=4)


PAYLOADS = payloads(st.text)
# Prefect's server on PostgreSQL cannot create a run whose parameters hold a NUL character (it answers 503 to every
# retry); granary refuses those before creating anything (test_cli), so the runs made behind its back hold none.
STORABLE_PAYLOADS = payloads(lambda **size: st.text(st.characters(codec="utf-8", exclude_characters="\x00"), **size))


FUZZED = "hello-fuzzed"


def _hello_schema() -> dict[str, Any]:
    from helpers import DEPLOYMENTS

    return find_definition("hello", [DEPLOYMENTS]).arguments_schema


def _valid(payload: dict[str, Any], schema: dict[str, Any]) -> bool:
    given = {k: v for k, v in payload.items() if v is not None}
    return set(given) <= set(schema["properties"]) and not violations(schema, given)


def test_granary_run_refuses_every_invalid_payload_before_anything_exists(client, runner):
    schema = _hello_schema()
    seen = {"tried": 0, "refused": 0, "created": 0}
    before = client.count_flow_runs()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(PAYLOADS)
    def check(payload: dict[str, Any]) -> None:
        if _valid(payload, schema):
            return  # a valid one would start a container: the REST test below runs those
        seen["tried"] += 1
        result = cli.invoke(app, ["run", "hello", "--params", json.dumps(payload)])
        assert result.exit_code == 1, (payload, result.output)
        assert "invalid arguments for task 'hello'" in result.output or "must be a JSON object" in result.output
        seen["refused"] += 1

    check()
    after = client.count_flow_runs()
    assert seen["tried"] >= 200 and seen["refused"] == seen["tried"]
    assert after == before  # not one flow run was created


@pytest.mark.timeout(1500)
def test_runs_created_through_the_api_with_any_payload_all_end_and_invalid_ones_start_nothing(
    client, docker_runtime, tmp_path
):
    import yaml
    from helpers import DEPLOYMENTS, register_definitions, runner_for

    from granary_flows.definition import RuntimeKind
    from granary_flows.store import ResultsStore

    schema = _hello_schema()
    # A copy of hello that no runner serves while its runs are created (on SQLite, 150 creates racing 8 runs' writes
    # met "database is locked" for minutes on a loaded CI machine). A runner of its own runs them afterwards.
    document = yaml.safe_load((DEPLOYMENTS / "hello.yaml").read_text()) | {"name": FUZZED}
    (tmp_path / f"{FUZZED}.yaml").write_text(yaml.safe_dump(document))
    served = register_definitions(client, [tmp_path])
    deployment = client.read_deployment_by_name(f"{FUZZED}/{FUZZED}")
    payloads: list[dict[str, Any]] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(STORABLE_PAYLOADS)
    def collect(payload: dict[str, Any]) -> None:
        payloads.append(payload)

    collect()
    payloads += [{"name": "ok"}, {"name": "ok", "times": 2}]  # two valid ones, so that the runner is seen running
    since = time.time()
    created = []
    for payload in payloads:
        body = {"parameters": payload, "enforce_parameter_schema": False}
        response = api_post(f"/deployments/{deployment.id}/create_flow_run", body, timeout=180)
        created.append((response.json()["id"], _valid(payload, schema)))
    deadline = time.monotonic() + 900  # about 30 a minute end here, 8 at a time; half that on a loaded machine
    pending = {flow_run_id for flow_run_id, _ in created}
    try:
        with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}, limit=8):
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} run(s) never ended"
                # Only the runs that ended, in one read: a read of each pending run twice a second loaded the server.
                pending -= {str(flow_run.id) for flow_run in client.read_flow_runs(flow_run_filter=_ended(pending))}
                time.sleep(1)
    finally:  # what did not end would break later tests' listings: its integers are more than Prefect can list
        for flow_run_id in pending:
            with contextlib.suppress(Exception):
                client.delete_flow_run(flow_run_id)
    events = docker_runtime.client.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"granary.task={FUZZED}"},
    )
    with_container = {event["Actor"]["Attributes"].get("granary.flow-run-id") for event in events}
    invalid = [flow_run_id for flow_run_id, valid in created if not valid]
    assert len(invalid) >= 100
    assert not with_container & set(invalid)  # no container for an invalid payload
    for flow_run_id, valid in created:
        state = client.read_flow_run(flow_run_id).state
        assert state.is_completed() if valid else state.is_failed(), (flow_run_id, state)
    assert api_post("/flow_runs/filter", {"limit": 200}).status_code == 200


def _ended(flow_run_ids: set[str]) -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    return FlowRunFilter(
        id=FlowRunFilterId(any_=sorted(flow_run_ids)), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final))
    )
