"""What `granary api` keeps between requests: the registry's listing (the API itself is tested in test_api.py)."""

import threading
import time
from types import SimpleNamespace

import pytest

from granary_flows.api import context as api_context
from granary_flows.api.context import ApiSettings, Context

pytestmark = pytest.mark.unit


class HeldRegistry:
    """A registry whose next read the test can hold up, as a loaded Prefect server does."""

    def __init__(self, *names: str):
        self.names = list(names)
        self.reads = 0
        self.gate: threading.Event | None = None
        self.reading = threading.Event()

    def hold_next_read(self) -> threading.Event:
        self.gate = threading.Event()
        self.reading.clear()
        return self.gate

    def entries(self) -> list[SimpleNamespace]:
        self.reads += 1
        names, gate, self.gate = list(self.names), self.gate, None  # what the server holds when the read begins
        self.reading.set()
        if gate:
            assert gate.wait(10)
        return [SimpleNamespace(name=name) for name in names]


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANARY_HOME", str(tmp_path))
    monkeypatch.setattr(api_context, "REGISTRY_TTL", 0.0)  # every listing is stale at once
    found = Context(client=None, settings=ApiSettings(results=str(tmp_path)), authenticator=None)
    found.registry = HeldRegistry("hello")
    return found


def until(condition) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_stale_listing_is_answered_while_one_read_of_the_registry_goes_on(ctx):
    registry = ctx.registry
    assert set(ctx.entries()) == {"hello"}
    registry.names.append("ndvi")
    gate = registry.hold_next_read()
    assert set(ctx.entries()) == {"hello"}  # answered without waiting for the read it started
    assert registry.reading.wait(10)
    assert [set(ctx.entries()) for _ in range(5)] == [{"hello"}] * 5
    assert registry.reads == 2  # requests meanwhile started no reads of their own
    gate.set()
    until(lambda: set(ctx.entries()) == {"hello", "ndvi"})


def test_after_a_registration_the_next_request_sees_it_though_an_older_read_ends_later(ctx, monkeypatch):
    registry = ctx.registry
    ctx.entries()
    gate = registry.hold_next_read()
    ctx.entries()  # starts a read of the registry as it is now
    assert registry.reading.wait(10)
    registry.names.append("ndvi")  # registered through this API meanwhile
    ctx.forget()
    assert set(ctx.entries()) == {"hello", "ndvi"}
    gate.set()  # the older read ends now, with the listing from before the registration
    until(lambda: not [t for t in threading.enumerate() if t.name == "granary-registry-refresh"])
    monkeypatch.setattr(api_context, "REGISTRY_TTL", 3600.0)
    assert set(ctx.entries()) == {"hello", "ndvi"}  # the older listing was not kept


def test_requests_that_find_no_listing_in_hand_wait_for_one_read_of_the_registry(ctx, monkeypatch):
    monkeypatch.setattr(api_context, "REGISTRY_TTL", 3600.0)  # no refreshes: only the cold reads are counted
    registry = ctx.registry
    gate = registry.hold_next_read()
    answers: list[set[str]] = []
    requests = [threading.Thread(target=lambda: answers.append(set(ctx.entries()))) for _ in range(5)]
    for request in requests:
        request.start()
    assert registry.reading.wait(10)
    time.sleep(0.2)  # the other four arrive while the first read is held
    gate.set()
    for request in requests:
        request.join(10)
    assert answers == [{"hello"}] * 5
    assert registry.reads == 1
