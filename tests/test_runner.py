"""The in-process runner's own loop: what it waits out (a server that is away) and what it says is its own fault."""

from __future__ import annotations

import logging

import httpx
import pytest

pytestmark = pytest.mark.unit


@pytest.fixture
def runner():
    from granary_flows.catalog import FixedCatalog
    from granary_flows.runner import InProcessRunner
    from granary_flows.store import ResultsStore

    return InProcessRunner(FixedCatalog({}), ResultsStore("/tmp/granary-unused"), {}, "test-runner")


def test_a_fault_of_the_runners_own_is_logged_with_its_traceback_not_taken_for_a_server_away(runner, caplog):
    def claim_due_runs() -> None:
        raise TypeError("a programming error")

    with caplog.at_level(logging.INFO, logger="granary.runner"):
        runner._attempt(claim_due_runs)
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "claim_due_runs failed" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is TypeError
    assert not runner._server_away


def test_a_server_that_is_away_is_said_once_and_its_return_once(runner, caplog):
    def refused() -> None:
        raise httpx.ConnectError("connection refused")

    def unavailable() -> None:
        request = httpx.Request("GET", "http://127.0.0.1:4200/api/flow_runs/filter")
        raise httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))

    with caplog.at_level(logging.INFO, logger="granary.runner"):
        runner._attempt(refused)
        runner._attempt(unavailable)
        runner._attempt(lambda: None)
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2 and "did not answer" in said[0] and "answers again" in said[1], said


def test_a_request_the_server_refuses_is_the_runners_fault():
    from granary_flows.runner import server_away

    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/filter")
    assert not server_away(httpx.HTTPStatusError("422", request=request, response=httpx.Response(422, request=request)))
    assert server_away(httpx.HTTPStatusError("429", request=request, response=httpx.Response(429, request=request)))
