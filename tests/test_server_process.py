"""The Prefect servers granary starts collect garbage off their event loop's thread (`server_process`): freeing a SQLite
cursor there could wait a minute on its connection's lock (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CYCLES = """
import gc, json, threading, time
from granary_flows.server_process import collect_off_the_loop

freed_on = []

class Cursor:  # as a SQLite cursor left in a reference cycle: only the cyclic collector frees it
    def __init__(self):
        self.me = self
    def __del__(self):
        freed_on.append(threading.current_thread().name)

collect_off_the_loop()
deadline = time.monotonic() + 30
while len(freed_on) < 100 and time.monotonic() < deadline:
    for _ in range(1000):
        Cursor()
    time.sleep(0.001)
print(json.dumps({"threads": sorted(set(freed_on)), "freed": len(freed_on), "automatic": gc.isenabled()}))
"""


def test_cycles_are_freed_on_the_collectors_thread_never_on_the_thread_that_made_them():
    ran = subprocess.run([sys.executable, "-c", CYCLES], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(ran.stdout)
    assert found["freed"] >= 100  # Python's own thresholds still bring collections: memory does not grow unbounded
    assert found["threads"] == ["granary-gc"]
    assert found["automatic"] is False
