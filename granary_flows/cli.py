"""The `granary` command: it parses, calls the library and prints; every failure exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from granary_flows.definition import find_definition, load_definitions
from granary_flows.errors import GranaryError

app = typer.Typer(
    help="Run containerized geospatial algorithms as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
DEPLOYMENTS = Path(os.environ.get("GRANARY_DEPLOYMENTS", "deployments"))
DeploymentsOption = typer.Option(DEPLOYMENTS, "--deployments", "-d", help="Folder or file of task definitions.")


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


@app.command()
def check(
    paths: list[Path] | None = typer.Argument(None, help="Task files or folders (default: deployments/)."),
) -> None:
    """Check task and pipeline definitions: fields, schemas (against their own draft), schedules, and each
    pipeline's steps (tasks, references, arguments against the step task's schema)."""
    definitions, errors = load_definitions(paths or [DEPLOYMENTS])
    for definition in definitions:
        console.print(
            f"[green]ok[/]    {definition.source}  [dim]{definition.name} {definition.version} "
            f"({definition.runtime_kind})[/]",
            highlight=False,
        )
    for error in errors:
        console.print(f"[red]error[/] {error.path}", highlight=False)
        for problem in error.problems:
            console.print(f"      {problem}", highlight=False, markup=False)
    if errors:
        raise fail(f"{len(errors)} broken task definition(s)")
    if not definitions:
        raise fail("no task definitions found")


LimitOption = typer.Option(8, help="How many executions run at once.")
ResultsOption = typer.Option(None, help="Results root (default: $GRANARY_RESULTS_URI or ~/.granary/results).")
DrainOption = typer.Option(
    False, "--drain", help="On SIGTERM or Ctrl+C, let running executions finish (a second one cancels them)."
)
PollOption = typer.Option(
    0.5,
    "--poll",
    help="Seconds between looks for due runs. New runs are picked up at once through the server's event stream;"
    " polling catches the rest (scheduled runs falling due, a stream that is down).",
)
SubprocessOption = typer.Option(
    False, "--subprocess", help="Leave execution to Prefect's own runner: a new Python process per flow run."
)


@app.command()
def serve(
    deployments: Path = DeploymentsOption,
    limit: int = LimitOption,
    results: str | None = ResultsOption,
    port: int | None = typer.Option(
        None,
        help="Port of the local Prefect server started when PREFECT_API_URL is unset ($GRANARY_LOCAL_PORT or 4200).",
    ),
    drain: bool = DrainOption,
    poll: float = PollOption,
    subprocess: bool = SubprocessOption,
) -> None:
    """Register every task under deployments/ and execute their runs in this process until interrupted."""
    _serve_in_process(deployments, limit, results, port, drain, poll, work_pool=None, prefect_runner=subprocess)


@app.command()
def worker(
    pool: str = typer.Option(..., "--pool", help="The work pool `granary deploy --pool` deployed the tasks to."),
    deployments: Path = DeploymentsOption,
    limit: int = LimitOption,
    results: str | None = ResultsOption,
    drain: bool = DrainOption,
    poll: float = PollOption,
    subprocess: bool = SubprocessOption,
) -> None:
    """Execute the runs of a work pool's granary deployments in this process (production).

    Runs of deployments whose task is not under deployments/ are left for other workers.
    """
    if subprocess:
        _exec_prefect_worker(pool, deployments, limit, results)
    _serve_in_process(deployments, limit, results, None, drain, poll, work_pool=pool, prefect_runner=False)


def _serve_in_process(
    deployments: Path,
    limit: int,
    results: str | None,
    port: int | None,
    drain: bool,
    poll: float,
    work_pool: str | None,
    prefect_runner: bool,
) -> None:
    """What `serve` and `worker` share: server, reconciliation, deployments, the runner, and a clean stop."""
    from granary_flows.server import configured_api_url, local_port, local_server

    definitions = _definitions_or_exit(deployments)
    _show_runner_logs()
    stop = threading.Event()
    with ExitStack() as stack:
        try:
            api_url = configured_api_url(port)
            if os.environ.get("PREFECT_API_URL"):
                console.print(f"Prefect server: {api_url} (PREFECT_API_URL)", highlight=False)
            elif api_url:
                console.print(f"Prefect server: {api_url} (already running on this machine)", highlight=False)
            else:
                api_url = stack.enter_context(local_server(port=port or local_port()))
                console.print(
                    f"Prefect server: {api_url} (started here, SQLite; stops with this command)", highlight=False
                )
            # Before Prefect is imported: it fixes its settings then, and threads without a settings context of their
            # own (the runner's, the log and event workers) would otherwise start a throwaway server of their own.
            os.environ["PREFECT_API_URL"] = api_url
            # A long-lived runner waits out a server restart (about 8 minutes of retries) instead of losing a run.
            os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "8")
            if prefect_runner:
                _serve_with_prefect_runner(definitions, deployments, limit, results)
                return
            from prefect.client.orchestration import get_client

            from granary_flows.flows import flow_for
            from granary_flows.runner import InProcessRunner, new_runner_id, reconcile
            from granary_flows.runtimes.batch import BatchRuntime
            from granary_flows.runtimes.docker import DockerRuntime, docker_client
            from granary_flows.store import ResultsStore

            store = ResultsStore(results)
            store.check_writable()
            runtimes = {"docker": DockerRuntime(docker_client(max_pool_size=limit * 4)), "batch": BatchRuntime(store)}
            runner_id = new_runner_id()
            with get_client(sync_client=True) as client:
                served = _served_deployments(client, definitions, work_pool)
                flows = {
                    deployment_id: flow_for(definition, store, runtimes, runner_id)
                    for deployment_id, definition in served.items()
                }
                settled = reconcile(client, list(runtimes.values()), list(flows))
        except GranaryError as err:
            raise fail(str(err)) from err
        for done in settled:
            console.print(f"[yellow]{done.action}[/] {done.execution_id}: {done.reason}", highlight=False)
        _print_served(list(served.values()), store.root, work_pool)
        runner = InProcessRunner(
            flows, list(runtimes.values()), runner_id, limit=limit, poll_interval=poll, work_pool=work_pool
        )

        def on_signal(*_: Any) -> None:
            if stop.is_set():
                runner.hurry()
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        runner.serve(stop, drain=drain)
        # Send the last logs and events while the server is up: a local one stops when this block ends, and Prefect's
        # workers would otherwise retry against it at exit.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
    console.print("stopped")


def _show_runner_logs() -> None:
    """The runner's own messages (a server that went away, draining, settled runs) on the console."""
    import logging

    from rich.logging import RichHandler

    granary_logger = logging.getLogger("granary")
    granary_logger.addHandler(RichHandler(console=err_console, show_path=False, markup=False))
    granary_logger.setLevel(logging.INFO)
    granary_logger.propagate = False


def _served_deployments(client: Any, definitions: list[Any], work_pool: str | None) -> dict[Any, Any]:
    """deployment id -> definition: registered here for `serve`; for a worker, those deployed to its pool."""
    from prefect.exceptions import ObjectNotFound

    from granary_flows.deployment import register

    if work_pool is None:
        return {register(client, definition): definition for definition in definitions}
    served = {}
    for definition in definitions:
        try:
            deployment = client.read_deployment_by_name(f"{definition.name}/{definition.name}")
        except ObjectNotFound:
            deployment = None
        if deployment is None or deployment.work_pool_name != work_pool:
            err_console.print(
                f"[yellow]skipped[/] {definition.name}: not deployed to pool {work_pool}; "
                f"run granary deploy --pool {work_pool}",
                highlight=False,
            )
            continue
        served[deployment.id] = definition
    if not served:
        raise GranaryError(f"no task here is deployed to pool {work_pool}: run granary deploy --pool {work_pool}")
    return served


def _serve_with_prefect_runner(definitions: list[Any], deployments: Path, limit: int, results: str | None) -> None:
    """`serve --subprocess`: Prefect's own Runner, which starts `python -m prefect.engine` per flow run."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

    from granary_flows.deployment import ENTRYPOINT_MODULE, register
    from granary_flows.store import ResultsStore

    _child_environment(deployments, results)
    runner = Runner(name="granary", limit=limit)
    for definition in definitions:
        runner.add_deployment(
            RunnerDeployment(
                name=definition.name, flow_name=definition.name, entrypoint=f"{ENTRYPOINT_MODULE}:{definition.name}"
            )
        )
    # Without a pull step, Prefect's runner would try to download the flow's code from a storage it never had.
    here = [{"prefect.deployments.steps.set_working_directory": {"directory": str(Path.cwd())}}]
    with get_client(sync_client=True) as client:
        for definition in definitions:  # the same deployments, with the task's form and schedules back on them
            register(client, definition, pull_steps=here)
    _print_served(definitions, ResultsStore(results).root, None)
    asyncio.run(runner.start())


def _exec_prefect_worker(pool: str, deployments: Path, limit: int, results: str | None) -> None:
    """`worker --subprocess`: become Prefect's own process worker on the pool."""
    import sys

    _child_environment(deployments, results)
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", str(limit)]
    os.execv(sys.executable, command)


def _child_environment(deployments: Path, results: str | None) -> None:
    """What the flow-run processes Prefect starts need to find the tasks and the results root."""
    os.environ["GRANARY_DEPLOYMENTS"] = str(deployments.resolve())
    if results:
        os.environ["GRANARY_RESULTS_URI"] = results


@app.command()
def deploy(
    pool: str = typer.Option(..., "--pool", help="The work pool whose workers run the executions."),
    deployments: Path = DeploymentsOption,
) -> None:
    """Create or update a deployment per task for a work pool (production)."""
    from granary_flows.deployment import ensure_work_pool, register
    from granary_flows.server import prefect_client

    definitions = _definitions_or_exit(deployments)
    try:
        with prefect_client() as client:
            if ensure_work_pool(client, pool):
                console.print(
                    f"created work pool {pool} (process); start a worker: prefect worker start --pool {pool}",
                    highlight=False,
                )
            for definition in definitions:
                deployment_id = register(client, definition, work_pool=pool)
                console.print(
                    f"[green]deployed[/] {definition.name}/{definition.name} -> pool {pool} [dim]({deployment_id})[/]",
                    highlight=False,
                )
    except GranaryError as err:
        raise fail(str(err)) from err


@app.command()
def run(
    task: str = typer.Argument(..., help="The task's name."),
    param: list[str] = typer.Option([], "--param", "-p", help="An argument, NAME=VALUE (VALUE read as JSON if it is)."),
    params: str | None = typer.Option(None, "--params", help="All arguments as one JSON object."),
    watch: bool = typer.Option(False, "--watch", help="Follow state and logs; print the results; exit 1 on failure."),
    deployments: Path = DeploymentsOption,
) -> None:
    """Start an execution of TASK, validated here before anything is created."""
    from prefect.settings import PREFECT_UI_URL

    from granary_flows import submission
    from granary_flows.server import prefect_client

    try:
        definition = find_definition(task, [deployments])
        arguments = (json.loads(params) if params else {}) | submission.parse_parameters(param)
        submission.validate(definition, arguments)
        with prefect_client() as client:
            flow_run = submission.submit(client, definition, arguments)
            console.print(f"execution [bold]{flow_run.id}[/] of {task} created ({flow_run.name})", highlight=False)
            ui = PREFECT_UI_URL.value()
            if ui:
                console.print(f"UI: {ui}/runs/flow-run/{flow_run.id}", highlight=False)
            if watch:
                _watch_to_results(client, flow_run.id)
    except (GranaryError, ValueError) as err:
        raise fail(str(err)) from err


def _watch_to_results(client: Any, flow_run_id: Any, since: datetime | None = None) -> None:
    """Follow an execution's states and logs, then print its results; exit 1 unless it completed."""
    from granary_flows import submission

    final = submission.watch(
        client,
        flow_run_id,
        on_state=lambda name, message: console.print(
            f"[bold]state[/] {name}" + (f": {message}" if message else ""), highlight=False
        ),
        on_log=lambda log: console.print(Text.assemble((f"{log.timestamp:%H:%M:%S} ", "dim"), log.message)),
        since=since,
    )
    if not final.state or not final.state.is_completed():
        raise fail(f"execution {flow_run_id} ended {final.state.name if final.state else 'unknown'}")
    _print_results(submission.results_document(client, str(flow_run_id)))


def _definition_if_known(name: str, deployments: Path) -> Any:
    """The task or pipeline, to check changed arguments here; None when it is not under `deployments`."""
    try:
        return find_definition(name, [deployments])
    except GranaryError:
        return None


@app.command()
def resume(
    execution_id: str = typer.Argument(..., help="The execution (flow run) to resume."),
    param: list[str] = typer.Option([], "--param", "-p", help="A changed argument, NAME=VALUE (VALUE read as JSON)."),
    watch: bool = typer.Option(False, "--watch", help="Follow state and logs; print the results; exit 1 on failure."),
    deployments: Path = DeploymentsOption,
) -> None:
    """Resume a failed execution; a pipeline reruns only its failed and not-yet-run steps.

    With -p, a new execution with those arguments changed, reusing every pipeline step they do not reach.
    """
    from granary_flows import submission
    from granary_flows.server import prefect_client

    try:
        changes = submission.parse_parameters(param)
        with prefect_client() as client:
            flow_run = submission.read_execution(client, execution_id)
            name = client.read_flow(flow_run.flow_id).name
            definition = _definition_if_known(name, deployments)
            asked = datetime.now(timezone.utc)
            resumed = submission.resume(client, execution_id, definition, changes)
            if resumed.id == flow_run.id:
                console.print(f"execution [bold]{resumed.id}[/] of {name} scheduled again", highlight=False)
            else:
                console.print(
                    f"execution [bold]{resumed.id}[/] of {name} created, resuming {execution_id}", highlight=False
                )
            if watch:
                _watch_to_results(client, resumed.id, since=asked)
    except (GranaryError, ValueError) as err:
        raise fail(str(err)) from err


@app.command()
def cleanup(
    older_than: str = typer.Option(..., "--older-than", help="Age, e.g. 5d, 12h, 30m: runs that ended before it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be removed, and remove nothing."),
    results: str | None = ResultsOption,
) -> None:
    """Remove interim results of pipeline runs that ended long enough ago; final results stay."""
    from granary_flows.cleanup import interim_results, parse_age, remove
    from granary_flows.store import ResultsStore

    try:
        age = parse_age(older_than)
        store = ResultsStore(results)
        removals = interim_results(store, age)
        table = Table(title=f"{'would remove' if dry_run else 'removed'} ({store.root})", title_justify="left")
        for column in ("folder", "bytes", "why"):
            table.add_column(column, overflow="fold")
        for removal in removals:
            table.add_row(removal.relative, f"{removal.bytes:,}", removal.why)
        freed = sum(removal.bytes for removal in removals) if dry_run else remove(store, removals)
    except (GranaryError, ValueError) as err:
        raise fail(str(err)) from err
    if removals:
        console.print(table)
    verb = "would free" if dry_run else "freed"
    console.print(f"{len(removals)} folder(s), {verb} {freed:,} bytes", highlight=False)


@app.command()
def results(execution_id: str = typer.Argument(..., help="The execution (flow run) id.")) -> None:
    """Print an execution's results document as JSON."""
    from granary_flows.server import prefect_client
    from granary_flows.submission import results_document

    try:
        with prefect_client() as client:
            document = results_document(client, execution_id)
    except GranaryError as err:
        raise fail(str(err)) from err
    print(json.dumps(document, indent=2))


@app.command("import-seed")
def import_seed(
    image: str = typer.Argument(
        ..., help="A local image whose com.ngageoint.seed.manifest label holds a Seed manifest."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Task file to write (default: deployments/<name>.yaml)."
    ),
) -> None:
    """Write a task file for a Seed-packaged image, after checking its manifest against the Seed schema."""
    import yaml

    from granary_flows import seed
    from granary_flows.runtimes.docker import docker_client

    try:
        labels = docker_client().images.get(image).labels or {}
    except GranaryError as err:
        raise fail(str(err)) from err
    except Exception as err:  # docker's ImageNotFound and API errors
        raise fail(f"cannot read image {image!r}: {err}") from err
    try:
        document = seed.manifest_from_label(labels, image)
        manifest = seed.parse_manifest(document, image)
    except GranaryError as err:
        raise fail(str(err)) from err
    target = output or DEPLOYMENTS / f"{manifest.job.name.lower()}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Seed job {manifest.job.name} {manifest.job.jobVersion}, imported from {image} by granary import-seed.\n"
        "# Fill in mounts (host paths), settings (values) and secrets (Prefect Secret block names) as needed.\n"
    )
    target.write_text(header + yaml.safe_dump(seed.deployment_document(document, image), sort_keys=False))
    console.print(f"[green]wrote[/] {target} [dim]({manifest.job.name} {manifest.job.jobVersion})[/]", highlight=False)


def _definitions_or_exit(deployments: Path) -> list[Any]:
    definitions, errors = load_definitions([deployments])
    for error in errors:
        err_console.print(f"[red]error[/] {error}", highlight=False, markup=False)
    if errors:
        raise fail(f"{len(errors)} broken task definition(s); fix them or run `granary check`")
    if not definitions:
        raise fail(f"no task definitions in {deployments}")
    return definitions


def _print_served(definitions: list[Any], results_root: str, work_pool: str | None) -> None:
    from prefect.settings import PREFECT_UI_URL

    title = f"granary worker, pool {work_pool}" if work_pool else "granary serve"
    table = Table(title=title, title_justify="left")
    for column in ("task", "version", "runtime", "deployment"):
        table.add_column(column)
    for definition in definitions:
        table.add_row(
            definition.name, definition.version, definition.runtime_kind, f"{definition.name}/{definition.name}"
        )
    console.print(table)
    console.print(f"results: {results_root}", highlight=False)
    console.print(
        f"UI: {PREFECT_UI_URL.value() or os.environ['PREFECT_API_URL'].removesuffix('/api')}", highlight=False
    )
    console.print("[dim]waiting for runs; Ctrl+C to stop[/]")


def _print_results(document: dict[str, Any]) -> None:
    if "pipeline" in document:
        return _print_pipeline(document)
    table = Table(title=f"results of {document['task']} {document['execution_id']}", title_justify="left")
    for column in ("title", "type", "size", "href"):
        table.add_column(column, overflow="fold")
    for asset in document["results"]:
        table.add_row(asset.get("title") or "", asset.get("type") or "", str(asset.get("size") or ""), asset["href"])
    console.print(table)
    if document.get("value") is not None:
        console.print(f"value: {json.dumps(document['value'])}", highlight=False)


def _print_pipeline(document: dict[str, Any]) -> None:
    table = Table(title=f"steps of {document['pipeline']} {document['execution_id']}", title_justify="left")
    for column in ("step", "task", "status", "executions", "reused", "results"):
        table.add_column(column, overflow="fold")
    for name, step in document["steps"].items():
        results = step.get("results") or []
        per_item = results if results and isinstance(results[0], list) else [results]
        hrefs = [asset["href"] for assets in per_item for asset in assets or [] if "data" in asset.get("roles", [])]
        table.add_row(
            name,
            step["task"],
            step["status"] + (f" ({step['reason']})" if step.get("reason") else ""),
            str(len(step["executions"])),
            str(sum(step.get("reused", []))),
            "\n".join(hrefs),
        )
    console.print(table)
    if document.get("resumes"):
        console.print(f"resumes execution {document['resumes']}", highlight=False)


if __name__ == "__main__":
    app()
