"""Prefect's own `prefect` command (`python -m granary_flows.server_process server start ...`), run with Python's cyclic
garbage collector on a thread of its own: how every Prefect server granary starts is run.

Why: on SQLite under load, the collector ran on the server's event loop thread and freed a SQLite cursor left in a
reference cycle. Freeing it resets its statement, which waits for its connection's mutex; that connection's own thread
held the mutex while it waited (SQLite's busy handler, up to 60 s) for the write lock, and the transaction holding
the write lock could not commit, since its coroutine needed the blocked event loop. The server answered nobody until
the busy timeout ran out (measured: docs/benchmarks.md). Collected on a thread of its own, the same wait releases the
interpreter's lock and blocks no request: the transaction commits, the lock is free, and the wait ends at once.

The collector keeps Python's thresholds for the young generations. A full collection, which walks the whole heap
(a second of CPU for a busy server), Python itself makes only once the heap grew by a quarter, which it does not tell;
here it is made when due and a minute has passed since the last one.
"""

from __future__ import annotations

import gc
import threading
import time

LOOK_EVERY = 0.02  # seconds between looks at the allocation counts
FULL_EVERY = 60.0  # seconds at least between full collections


def collect_off_the_loop() -> threading.Thread:
    """Stop automatic collection in every thread, and collect from a daemon thread of its own instead."""
    thresholds = gc.get_threshold()
    gc.disable()
    collector = threading.Thread(target=_collect, args=(thresholds,), name="granary-gc", daemon=True)
    collector.start()
    return collector


def _collect(thresholds: tuple[int, int, int]) -> None:
    last_full = time.monotonic()
    while True:
        time.sleep(LOOK_EVERY)
        counts = gc.get_count()
        if counts[2] > thresholds[2] and time.monotonic() - last_full > FULL_EVERY:
            gc.collect(2)
            last_full = time.monotonic()
        elif counts[1] > thresholds[1]:
            gc.collect(1)
        elif counts[0] > thresholds[0]:
            gc.collect(0)


def main() -> None:
    collect_off_the_loop()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
