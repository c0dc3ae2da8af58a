"""The installation's keys: kept in Prefect, made once, read from any thread."""

from __future__ import annotations

import asyncio

import pytest

from granary_flows import keys


def test_the_keys_are_read_on_an_event_loops_thread_as_elsewhere(prefect_server):
    """An async route of the API reads them on its event loop's thread, where Prefect's `load` hands back a coroutine:
    the webhook once answered 500 (AttributeError) whenever the 30 s cache ran out there."""
    keys._cache.clear()
    made = keys.current_keys(create=True)
    keys._cache.clear()

    async def on_the_loop() -> keys.Keys | None:
        return keys.current_keys()

    assert asyncio.run(on_the_loop()) == made


@pytest.mark.unit
def test_a_signature_holds_only_for_its_own_parts_and_key():
    one, other = keys.Keys(signing="k1", owner="o"), keys.Keys(signing="k2", owner="o")
    signature = one.sign("output", "job", "a.tif", "1797257872")
    assert one.holds(signature, "output", "job", "a.tif", "1797257872")
    assert not one.holds(signature, "output", "job", "a.tif", "1797257873")
    assert not one.holds(signature, "output", "jo", "ba.tif", "1797257872")
    assert not other.holds(signature, "output", "job", "a.tif", "1797257872")
    rotated = keys.Keys(signing="k2", previous="k1", owner="o")
    assert signature in rotated.signatures("output", "job", "a.tif", "1797257872", previous=True)
    assert one.owner_mark("alice") == other.owner_mark("alice") != one.owner_mark("bob")
