"""The runs a runner's last look at the server found due, which it claims as places free up without asking again,
and the time the next one falls due, which wakes it then rather than at its next poll."""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import Any


class DueRuns:
    """What the last look found: runs due now (to claim, in the server's order), whether the server had more than
    it was asked for, and when the first run not yet due falls due.

    Example:
        >>> from datetime import timedelta, timezone
        >>> from types import SimpleNamespace as Run
        >>> now = datetime(2026, 12, 3, tzinfo=timezone.utc)
        >>> due = DueRuns()
        >>> due.found([Run(id=1, next_scheduled_start_time=now), Run(id=2, next_scheduled_start_time=now)], 4, now)
        >>> [due.next().id, due.next().id, due.next(), due.more]
        [1, 2, None, False]
    """

    def __init__(self) -> None:
        self._runs: deque[Any] = deque()
        self.more = False
        self._next_due: float | None = None  # monotonic
        self._found_at = 0.0

    def found(self, runs: list[Any], asked: int, now: datetime) -> None:
        """The answer to a look at `now` for at most `asked` runs due before some time after it."""
        due = [run for run in runs if _start(run, now) <= now]
        later = [_start(run, now) for run in runs if _start(run, now) > now]
        self._runs = deque(due)
        # The server sorts by start time (a pool, by its queues' priority first): with a run not yet due in the answer,
        # no due one was left out.
        self.more = len(runs) >= asked and not later
        self._next_due = time.monotonic() + (min(later) - now).total_seconds() if later else None
        self._found_at = time.monotonic()

    def next(self) -> Any | None:
        """The next run found due, or None."""
        return self._runs.popleft() if self._runs else None

    def came_due(self) -> bool:
        """Whether a run the last look saw coming is due now; said once."""
        if self._next_due is None or time.monotonic() < self._next_due:
            return False
        self._next_due = None
        return True

    def stale(self, seconds: float) -> bool:
        """Whether the last look is older than `seconds`: its runs may have been taken or changed since."""
        return time.monotonic() - self._found_at > seconds


def _start(run: Any, now: datetime) -> datetime:
    return getattr(run, "next_scheduled_start_time", None) or now
