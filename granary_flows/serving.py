"""What `granary serve` and `granary worker` do, as a library: find (or start) the Prefect server, register the task
folder, settle what a dead runner left, and run the registry's tasks in this process until stopped.

The CLI only parses and prints; tests and other programs call `serve` directly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from granary_flows.errors import DefinitionError, GranaryError


class ServeOptions(BaseModel):
    """How to serve. `work_pool` makes it a worker of that pool; `deployments` is registered first, if given."""

    deployments: Path | None = None
    limit: int = 8
    results: str | None = None
    port: int | None = None
    drain: bool = False
    poll: float = 0.5
    work_pool: str | None = None
    subprocess: bool = False


class ServerChoice(BaseModel):
    """The Prefect server used, and why it is that one."""

    api_url: str
    how: str  # "PREFECT_API_URL", "already running", "started here"


class Served(BaseModel):
    """What serving set up, for the caller to say."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    server: ServerChoice
    registered: list[Any] = []  # registry entries of the task folder
    settled: list[Any] = []  # runner.Settled
    results_root: str = ""
    ui_url: str = ""
    runner: Any = None


@contextmanager
def prefect_server(port: int | None = None) -> Iterator[ServerChoice]:
    """The Prefect server to use: `PREFECT_API_URL`, else the local one on `port` (default `GRANARY_LOCAL_PORT`),
    else one started here (SQLite, requiring its credential) for as long as this lasts. `PREFECT_API_URL` and the
    credential are set for this process before Prefect is imported: it fixes its settings then, and threads without a
    settings context of their own (the runner's, the log and event workers) would otherwise start a throwaway server
    of their own, or be refused."""
    from granary_flows.server import configured_api_url, local_port, local_server
    from granary_flows.server_auth import use_for_client
    from granary_flows.server_log import server_log_path

    with ExitStack() as stack:
        api_url = configured_api_url(port)
        if os.environ.get("PREFECT_API_URL"):
            choice = ServerChoice(api_url=api_url or "", how="PREFECT_API_URL")
        elif api_url:
            choice = ServerChoice(api_url=api_url, how="already running on this machine")
        else:
            log = server_log_path(port or local_port())
            started = stack.enter_context(local_server(port=port or local_port(), log_file=log))
            choice = ServerChoice(api_url=started, how=f"started here, SQLite; stops with this command; its log: {log}")
        os.environ["PREFECT_API_URL"] = choice.api_url
        use_for_client(choice.api_url)
        # A long-lived runner waits out a server restart (about 8 minutes of retries) instead of losing a run.
        os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "8")
        yield choice


def serve(options: ServeOptions, stop: threading.Event, on_ready: Callable[[Served], None]) -> Served:
    """Serve until `stop` is set.

    Args:
        options: what to serve and how.
        stop: set it (a signal handler does) to stop; set it twice (`runner.hurry()`) to cancel what still runs
            while draining.
        on_ready: called once everything is set up, before the first run is taken.

    Raises:
        DefinitionError: a file of the task folder is broken (all of them are checked before anything changes).
        GranaryError: no server, no Docker engine, a results root that cannot be written, no task to serve.
    """
    from granary_flows.loading import read_files

    loaded: list[Any] = []
    if options.deployments is not None and options.deployments.exists():
        loaded, errors = read_files([options.deployments])
        if errors:
            raise BrokenDefinitions(errors)
    with prefect_server(options.port) as server:
        if options.subprocess:
            return _serve_with_prefect_runner(options, server, loaded, on_ready)
        return _serve_in_process(options, server, loaded, stop, on_ready)


class BrokenDefinitions(GranaryError):
    """Files of the task folder that cannot be registered, each with its problems."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = errors
        super().__init__(f"{len(errors)} broken task definition(s); fix them or run `granary check`")


def _serve_in_process(
    options: ServeOptions,
    server: ServerChoice,
    loaded: list[Any],
    stop: threading.Event,
    on_ready: Callable[[Served], None],
) -> Served:
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from granary_flows.catalog import RegistryCatalog
    from granary_flows.definition import RuntimeKind
    from granary_flows.registry import Registry
    from granary_flows.restarts import new_runner_id, reconcile
    from granary_flows.runner import InProcessRunner
    from granary_flows.runtimes.batch import BatchRuntime
    from granary_flows.runtimes.docker import DockerRuntime, docker_client
    from granary_flows.store import ResultsStore

    store = ResultsStore(options.results)
    store.check_writable()
    runtimes = {
        RuntimeKind.DOCKER: DockerRuntime(docker_client(max_pool_size=options.limit * 4)),
        RuntimeKind.BATCH: BatchRuntime(store),
    }
    runner_id = new_runner_id()
    catalog = RegistryCatalog(options.work_pool)
    with get_client(sync_client=True) as client:
        registry = Registry(client)
        also = {entry.definition.name: entry.definition for entry in loaded if entry.source_format.value != "pipeline"}
        registered = [registry.register(entry, also=also) for entry in loaded]
        if options.work_pool and not catalog.deployment_ids(client):
            _ensure_pool(client, options.work_pool)
        settled = reconcile(client, list(runtimes.values()), None, store)
    runner = InProcessRunner(
        catalog,
        store,
        runtimes,
        runner_id,
        limit=options.limit,
        poll_interval=options.poll,
        work_pool=options.work_pool,
    )
    served = Served(
        server=server,
        registered=registered,
        settled=settled,
        results_root=store.root,
        ui_url=_ui_url(server.api_url),
        runner=runner,
    )
    on_ready(served)
    runner.serve(stop, drain=options.drain)
    # Send the last logs and events while the server is up: a local one stops when serving ends, and Prefect's
    # workers would otherwise retry against it at exit.
    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)
    return served


def _serve_with_prefect_runner(
    options: ServeOptions, server: ServerChoice, loaded: list[Any], on_ready: Callable[[Served], None]
) -> Served:
    """`serve --subprocess`: Prefect's own Runner, which starts `python -m prefect.engine` per flow run."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

    from granary_flows.deployment import ENTRYPOINT_MODULE
    from granary_flows.registry import Registry
    from granary_flows.store import ResultsStore

    child_environment(options.results)
    runner = Runner(name="granary", limit=options.limit)
    # Without a pull step, Prefect's runner would try to download the flow's code from a storage it never had.
    here = [{"prefect.deployments.steps.set_working_directory": {"directory": str(Path.cwd())}}]
    with get_client(sync_client=True) as client:
        registry = Registry(client)
        also = {entry.definition.name: entry.definition for entry in loaded if entry.source_format.value != "pipeline"}
        registered = [registry.register(entry, pull_steps=here, also=also) for entry in loaded]
        names = [entry.name for entry in registry.entries() if entry.work_pool is None]
    for name in names:
        runner.add_deployment(RunnerDeployment(name=name, flow_name=name, entrypoint=f"{ENTRYPOINT_MODULE}:{name}"))
    served = Served(
        server=server,
        registered=registered,
        results_root=ResultsStore(options.results).root,
        ui_url=_ui_url(server.api_url),
    )
    on_ready(served)
    asyncio.run(runner.start())
    return served


def child_environment(results: str | None) -> None:
    """What the flow-run processes Prefect starts need to find the results root."""
    if results:
        os.environ["GRANARY_RESULTS_URI"] = results


def _ensure_pool(client: Any, pool: str) -> None:
    from granary_flows.deployment import ensure_work_pool

    ensure_work_pool(client, pool)


def _ui_url(api_url: str) -> str:
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value() or api_url.removesuffix("/api")
