"""The private Prefect names granary uses, each guarded: present, they are used; gone, Prefect's public path is taken
and said."""

from __future__ import annotations

import contextlib
import logging
import ssl

import pytest


@pytest.mark.unit
def test_the_suspension_watch_is_skipped_for_granarys_runs_only(monkeypatch):
    import prefect.flow_engine

    from granary_flows import prefect_internals

    watched: list[str] = []

    @contextlib.contextmanager
    def watch(flow_run_id, request, *_, **__):
        watched.append(flow_run_id)
        yield

    monkeypatch.setattr(prefect.flow_engine, "observe_flow_run_suspension", watch)
    prefect_internals.skip_suspension_watch()
    prefect_internals.skip_suspension_watch()  # once is enough: a second call wraps nothing again
    with prefect.flow_engine.observe_flow_run_suspension("another flow's run", None):
        pass
    with prefect_internals.granary_run(), prefect.flow_engine.observe_flow_run_suspension("granary's run", None):
        pass
    assert watched == ["another flow's run"]


@pytest.mark.unit
def test_without_the_suspension_watch_name_nothing_is_patched_and_it_is_said(monkeypatch, caplog):
    import prefect.flow_engine

    from granary_flows import prefect_internals

    monkeypatch.delattr(prefect.flow_engine, "observe_flow_run_suspension")
    monkeypatch.setattr(prefect_internals, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="granary.prefect"):
        prefect_internals.skip_suspension_watch()
        assert prefect_internals.SUSPENSION_WATCH in prefect_internals.check()
    assert not hasattr(prefect.flow_engine, "observe_flow_run_suspension")
    [said] = [r.getMessage() for r in caplog.records]
    name = prefect_internals.SUSPENSION_WATCH
    assert said == f"this Prefect has no {name}: granary takes Prefect's public path instead (slower)"


def test_a_runs_client_context_carries_the_runners_tls_context_and_reads_as_prefects_default(prefect_server):
    from prefect.client.orchestration import get_client

    from granary_flows import prefect_internals

    tls = ssl.create_default_context()
    context = prefect_internals.run_client_context(tls)
    assert context._httpx_settings is None  # what get_client() compares with: its own client is this one
    with context as entered:
        assert get_client(sync_client=True) is entered.client  # the engines' and the artifacts' clients are this one


@pytest.mark.unit
def test_without_the_client_settings_name_a_runs_client_context_is_prefects_own(monkeypatch):
    from granary_flows import prefect_internals

    monkeypatch.setattr(prefect_internals, "missing", lambda: [prefect_internals.CLIENT_SETTINGS])
    context = prefect_internals.run_client_context(ssl.create_default_context())
    assert type(context).__name__ == "SyncClientContext" and context._httpx_settings is None


@pytest.mark.unit
def test_the_names_this_prefect_lacks_are_only_those_this_module_knows():
    from granary_flows import prefect_internals

    known = {prefect_internals.SUSPENSION_WATCH, prefect_internals.CLIENT_SETTINGS, prefect_internals.WRAPPED_FUTURE}
    assert set(prefect_internals.missing()) <= known
