"""Cancellation tokens: how the runner tells an execution, at any phase, that its run was cancelled.

The runner that claims a run makes a token, hands it to the flow through `running_with` (a context variable, so that
each run's thread sees its own), and cancels it when the run is set to Cancelling. The flow passes it down explicitly:
staging checks it between reads, the runtime's wait wakes on it, uploads stop at the next file.

Example:
    >>> token = CancelToken()
    >>> token.cancel("cancellation was requested")
    >>> token.cancelled, token.reason
    (True, 'cancellation was requested')
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from granary_flows.errors import ExecutionCancelled


class CancelToken:
    """Set once, by whoever cancels; read by everything the execution does."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when cancelled (at once if it is already); returns how to take it back."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once on cancellation; True when cancelled."""
        return self._event.wait(seconds)

    def check(self, what: str) -> None:
        """Raises ExecutionCancelled, saying what was cancelled, once the token is set."""
        if self._event.is_set():
            raise ExecutionCancelled(f"{what} was cancelled ({self.reason})")


_current: ContextVar[CancelToken | None] = ContextVar("granary_cancel_token", default=None)


def current_token() -> CancelToken:
    """The token of the run this thread executes; a fresh one (never cancelled) outside granary's runner."""
    return _current.get() or CancelToken()


@contextmanager
def running_with(token: CancelToken) -> Iterator[CancelToken]:
    """Make `token` the current one for the flow run executed inside."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)
