"""Every name of Prefect's that granary uses without Prefect documenting it as public, in this one module.

Each use is guarded: `check()` (called when a runner starts) says which of them the installed Prefect lacks, and every
helper here falls back to Prefect's public path, with a warning, when its name is gone. What each one buys was
measured (docs: architecture, benchmarks); losing one costs speed, never correctness.

- `prefect.flow_engine.observe_flow_run_suspension`: skipped for granary's own runs (not for other flows in the
  process). Without it, each run watches for a suspension, with a thread and an event subscription of its own.
- `prefect.context.SyncClientContext._httpx_settings`: a run's client context carries the runner's one TLS context.
  Without it, each run's client loads a CA bundle.
- `prefect.futures.PrefectConcurrentFuture.wrapped_future`: a pipeline waits for whichever step ends first. Without it,
  it waits with `prefect.futures.as_completed` and reads the futures' states.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import ssl
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_concurrent
from typing import Any

from prefect.context import SyncClientContext

logger = logging.getLogger("granary.prefect")
SUSPENSION_WATCH = "prefect.flow_engine.observe_flow_run_suspension"
CLIENT_SETTINGS = "prefect.context.SyncClientContext._httpx_settings"
WRAPPED_FUTURE = "prefect.futures.PrefectConcurrentFuture.wrapped_future"
_granary_run = contextvars.ContextVar("granary_run", default=False)
_warned: set[str] = set()


def missing() -> list[str]:
    """The private names this module uses that the installed Prefect lacks."""
    import prefect.flow_engine
    from prefect.futures import PrefectConcurrentFuture

    absent = []
    if not callable(getattr(prefect.flow_engine, "observe_flow_run_suspension", None)):
        absent.append(SUSPENSION_WATCH)
    if "_httpx_settings" not in getattr(SyncClientContext, "__private_attributes__", {}):
        absent.append(CLIENT_SETTINGS)
    if not isinstance(getattr(PrefectConcurrentFuture, "wrapped_future", None), property):
        absent.append(WRAPPED_FUTURE)
    return absent


def check() -> list[str]:
    """Say, once per process, which private names are gone and what granary does instead. Returns them."""
    absent = missing()
    for name in absent:
        _warn(name)
    return absent


def _warn(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        logger.warning("this Prefect has no %s: granary takes Prefect's public path instead (slower)", name)


def skip_suspension_watch() -> None:
    """Let granary's runs skip Prefect's watch for a flow-run suspension, which costs each run a thread, an event loop
    and an event subscription (a twelfth of the runner's CPU and a tenth of a run's time, measured). A granary run
    cannot be suspended: its work is a container, which a suspension would not stop; cancellation is watched by the
    runner. Other flows in the process keep the watch: only code inside `granary_run()` skips it."""
    import prefect.flow_engine

    original = getattr(prefect.flow_engine, "observe_flow_run_suspension", None)
    if not callable(original):
        _warn(SUSPENSION_WATCH)
        return
    if getattr(original, "granary_skips", False):
        return

    @contextlib.contextmanager
    def observed_unless_granary(*arguments: Any, **options: Any) -> Iterator[None]:
        if _granary_run.get():
            yield
            return
        with original(*arguments, **options):
            yield

    observed_unless_granary.granary_skips = True  # type: ignore[attr-defined]
    prefect.flow_engine.observe_flow_run_suspension = observed_unless_granary  # type: ignore[attr-defined]


@contextlib.contextmanager
def granary_run() -> Iterator[None]:
    """The code of one of granary's own runs, which skips the suspension watch (`skip_suspension_watch`)."""
    token = _granary_run.set(True)
    try:
        yield
    finally:
        _granary_run.reset(token)


def run_client_context(tls: ssl.SSLContext | None) -> SyncClientContext:
    """A run's client context whose client uses the runner's one TLS context.

    Prefect builds a TLS context for every client, loading a CA bundle even when it verifies nothing (a fifth to a
    third of the runner's CPU per execution, measured). The engines' and the artifacts' `get_client()` reuse the
    context's client only when its `_httpx_settings` equal theirs (None): so the context is built with the TLS context
    and its settings then read as None. Without that attribute, a plain context (each client builds its own)."""
    if tls is None or CLIENT_SETTINGS in missing():
        if tls is not None:
            _warn(CLIENT_SETTINGS)
        return SyncClientContext()
    context = SyncClientContext(httpx_settings={"verify": tls})
    context._httpx_settings = None
    return context


def first_done(futures: list[Any]) -> None:
    """Wait until one of these Prefect task futures is done (or already is)."""
    if all(isinstance(getattr(type(f), "wrapped_future", None), property) for f in futures):
        wait_concurrent([future.wrapped_future for future in futures], return_when=FIRST_COMPLETED)
        return
    _warn(WRAPPED_FUTURE)
    from prefect.futures import as_completed

    next(iter(as_completed(futures)))


def is_done(future: Any) -> bool:
    """Whether a Prefect task future is done, without asking the server when it can be told here."""
    if isinstance(getattr(type(future), "wrapped_future", None), property):
        return bool(future.wrapped_future.done())
    _warn(WRAPPED_FUTURE)
    state = future.state
    return bool(state and state.is_final())
