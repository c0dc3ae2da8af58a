"""The `granary` command: it parses, calls the library and prints; every failure exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from granary_flows.errors import GranaryError
from granary_flows.loading import read_files
from granary_flows.server_auth import use_for_client
from granary_flows.server_log import server_log_path

app = typer.Typer(
    help="Run containerized geospatial algorithms as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="What is registered: list, show and remove tasks and pipelines.", no_args_is_help=False)
app.add_typer(tasks_app, name="tasks")
server_app = typer.Typer(
    help="Run Prefect's server as granary runs it: only the services granary needs (docs: production).",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
keys_app = typer.Typer(help="The keys granary signs result links, sessions and webhooks with.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err_console = Console(stderr=True)
DeploymentsOption = typer.Option(
    "deployments",
    "--deployments",
    "-d",
    envvar="GRANARY_DEPLOYMENTS",
    help="Folder or file of task definitions.",
)


@app.callback()
def main() -> None:
    """Run containerized geospatial algorithms as Prefect flows."""
    # Before any command imports Prefect, which fixes its settings then: a server granary started on this machine
    # requires its credential, and every command finds it.
    try:
        use_for_client(os.environ.get("PREFECT_API_URL"))
    except GranaryError as err:
        raise fail(str(err)) from err


def deployments_folder() -> Path:
    """Where task files are by default: `$GRANARY_DEPLOYMENTS`, else `deployments/` here."""
    return Path(os.environ.get("GRANARY_DEPLOYMENTS") or "deployments")


def fail(message: str) -> typer.Exit:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    return typer.Exit(1)


def _name_of(entry: Any) -> str:
    """A definition's name, and the free-text name it was given where that differs (a Granary document's)."""
    given = entry.document.get("name") if isinstance(entry.document, dict) else None
    if isinstance(given, str) and given != entry.definition.name:
        return f"{entry.definition.name} (from {given!r})"
    return str(entry.definition.name)


@app.command()
def check(
    paths: list[Path] | None = typer.Argument(None, help="Task files or folders (default: deployments/)."),
) -> None:
    """Check task and pipeline definitions, in any format: fields, schemas (against their own draft), schedules, and
    each pipeline's steps (tasks, references, arguments against the step task's schema)."""
    loaded, errors = read_files(paths or [deployments_folder()])
    for entry in loaded:
        definition = entry.definition
        console.print(
            f"[green]ok[/]    {entry.source}  [dim]{_name_of(entry)} {definition.version} "
            f"({definition.runtime_kind.value}, {entry.source_format.value})[/]",
            highlight=False,
        )
    _print_errors(errors, console)
    if errors:
        raise fail(f"{len(errors)} broken task definition(s)")
    if not loaded:
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
        help="Port of the local Prefect server, used (or started) when PREFECT_API_URL is unset "
        "($GRANARY_LOCAL_PORT or 4200).",
    ),
    drain: bool = DrainOption,
    poll: float = PollOption,
    subprocess: bool = SubprocessOption,
) -> None:
    """Register every task under deployments/ and execute the runs of every registered task in this process until
    interrupted."""
    from granary_flows.serving import ServeOptions

    _serve(
        ServeOptions(
            deployments=deployments,
            limit=limit,
            results=results,
            port=port,
            drain=drain,
            poll=poll,
            subprocess=subprocess,
        )
    )


@app.command()
def worker(
    pool: str = typer.Option(..., "--pool", help="The work pool its tasks are registered to (granary deploy)."),
    limit: int = LimitOption,
    results: str | None = ResultsOption,
    drain: bool = DrainOption,
    poll: float = PollOption,
    subprocess: bool = SubprocessOption,
) -> None:
    """Execute the runs of a work pool's registered tasks in this process (production); it needs no task files, and
    picks up tasks registered while it runs."""
    from granary_flows.serving import ServeOptions, child_environment

    if subprocess:
        import sys

        child_environment(results)
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", str(limit)]
        os.execv(sys.executable, command)
    _serve(ServeOptions(work_pool=pool, limit=limit, results=results, drain=drain, poll=poll))


def _serve(options: Any) -> None:
    from granary_flows.serving import BrokenDefinitions, serve

    _show_runner_logs()
    stop = threading.Event()
    runner_of: dict[str, Any] = {}

    def on_signal(*_: Any) -> None:
        if stop.is_set() and runner_of.get("runner") is not None:
            runner_of["runner"].hurry()
        stop.set()

    def ready(served: Any) -> None:
        runner_of["runner"] = served.runner
        _print_served(served, options.work_pool)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        serve(options, stop, on_ready=ready)
    except BrokenDefinitions as err:
        for error in err.errors:
            err_console.print(f"[red]error[/] {error}", highlight=False, markup=False)
        raise fail(str(err)) from err
    except GranaryError as err:
        raise fail(str(err)) from err
    console.print("stopped")


def _audit_lines() -> None:
    """The API's audit trail: one JSON line per registration, execution, dismissal and refused request, on stderr."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit = logging.getLogger("granary.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def _show_runner_logs() -> None:
    """The runner's own messages (a server that went away, draining, settled runs) on the console."""
    import logging

    from rich.logging import RichHandler

    granary_logger = logging.getLogger("granary")
    granary_logger.addHandler(RichHandler(console=err_console, show_path=False, markup=False))
    granary_logger.setLevel(logging.INFO)
    granary_logger.propagate = False


def _print_served(served: Any, work_pool: str | None) -> None:
    console.print(f"Prefect server: {served.server.api_url} ({served.server.how})", highlight=False, soft_wrap=True)
    for done in served.settled:
        console.print(
            Text.assemble((done.action, "yellow"), f" {done.execution_id}: {done.reason}"),
            highlight=False,
            soft_wrap=True,
        )
    from granary_flows.registry import Registry
    from granary_flows.server import prefect_client

    with prefect_client() as client:
        entries = [e for e in Registry(client).entries() if e.work_pool == work_pool]
    title = f"granary worker, pool {work_pool}" if work_pool else "granary serve"
    table = Table(title=title, title_justify="left")
    for column in ("task", "version", "runtime", "deployment"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.name, entry.version, entry.runtime, f"{entry.name}/{entry.name}")
    console.print(table)
    console.print(f"results: {served.results_root}", highlight=False)
    console.print(f"UI: {served.ui_url}", highlight=False)
    console.print("[dim]waiting for runs; Ctrl+C to stop[/]")


@server_app.command("start")
def server_start(
    host: str = typer.Option("127.0.0.1", help="The address to listen on."),
    port: int = typer.Option(4200, help="The port to listen on."),
    no_services: bool = typer.Option(False, "--no-services", help="An API replica: the services run elsewhere."),
) -> None:
    """Prefect's server (`prefect server start`), without the services granary does not need, requiring its
    credential (`granary server credentials` prints it; GRANARY_SERVER_AUTH=off, on 127.0.0.1 only, does not)."""
    import sys

    from granary_flows.server import SERVER_PROCESS, server_environment
    from granary_flows.server_auth import SERVER_VARIABLE, check_listening

    try:
        environment = server_environment(os.environ)
        check_listening(host, environment.get(SERVER_VARIABLE))
    except GranaryError as err:
        raise fail(str(err)) from err
    command = [sys.executable, "-m", SERVER_PROCESS, "server", "start", "--host", host, "--port", str(port)]
    _run_server(command + (["--no-services"] if no_services else []), environment, server_log_path(port))


@server_app.command("credentials")
def server_credentials(
    shell: bool = typer.Option(False, "--shell", help="As `export` lines for a shell, with the server's address."),
) -> None:
    """The credential of the Prefect server granary starts on this machine (for PREFECT_HOME): Prefect's UI asks for
    it, and scripts give it to Prefect's client as PREFECT_API_AUTH_STRING. Made when there is none yet."""
    import shlex

    from granary_flows.server import local_port
    from granary_flows.server_auth import server_credential

    try:
        credential = server_credential()
    except GranaryError as err:
        raise fail(str(err)) from err
    if credential is None:
        raise fail("GRANARY_SERVER_AUTH=off: the servers granary starts here take no credential")
    if not shell:
        typer.echo(credential)
        return
    api_url = os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{local_port()}/api"
    typer.echo(f"export PREFECT_API_URL={shlex.quote(api_url)}")
    typer.echo(f"export PREFECT_API_AUTH_STRING={shlex.quote(credential)}")


@server_app.command("services")
def server_services() -> None:
    """Prefect's services in a process of their own (`prefect server services start`), for API replicas started
    with --no-services; the same lean set."""
    import sys

    from granary_flows.server import SERVER_PROCESS, server_environment

    command = [sys.executable, "-m", SERVER_PROCESS, "server", "services", "start"]
    _run_server(command, server_environment(os.environ), server_log_path("services", "prefect"))


def _run_server(command: list[str], environment: dict[str, str], log: Path) -> None:
    """Become the Prefect server process, its output on this terminal and in its rotating log."""
    from granary_flows.server_log import exec_with_log

    err_console.print(f"Prefect's log: {log}", highlight=False, soft_wrap=True)
    exec_with_log(command, environment, log)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new signing key: result links signed before stop opening by themselves (whoever may see the job signs in to
    the API and lands on the file), everyone signed in to the API signs in again, and jobs running now keep their
    webhooks. Every runner and API uses the new key within 30 seconds."""
    from granary_flows.keys import rotate
    from granary_flows.server import prefect_client

    try:
        with prefect_client():
            keys = rotate()
    except GranaryError as err:
        raise fail(str(err)) from err
    console.print(f"signing key rotated at {keys.rotated:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="The address to listen on."),
    port: int = typer.Option(5050, help="The port to listen on."),
    results: str | None = ResultsOption,
    trusted_proxies: str = typer.Option(
        "",
        envvar="GRANARY_API_TRUSTED_PROXIES",
        help="Addresses of the reverse proxies whose X-Forwarded-Proto and X-Forwarded-For are believed (comma "
        "separated); none by default. Behind a proxy that ends TLS, the sign-in cookie is then marked Secure.",
    ),
) -> None:
    """Serve OGC API - Processes (Parts 1 and 2) and Granary's REST API over the registered tasks and their runs."""
    import uvicorn

    from granary_flows.api.app import create_app
    from granary_flows.api.context import ApiSettings
    from granary_flows.server import configured_api_url

    api_url = configured_api_url()
    if not api_url:
        raise fail("no Prefect server: set PREFECT_API_URL, or start `granary serve` first")
    os.environ["PREFECT_API_URL"] = api_url
    _show_runner_logs()
    _audit_lines()
    try:
        application = create_app(ApiSettings(results=results))
    except GranaryError as err:
        raise fail(str(err)) from err
    from granary_flows.store import ResultsStore

    console.print(f"Prefect server: {api_url}", highlight=False, soft_wrap=True)
    console.print(f"results: {ResultsStore(results).root}", highlight=False, soft_wrap=True)
    authenticator = application.state.authenticator
    style = "yellow" if authenticator.settings.off else None
    console.print(authenticator.describe(), style=style, highlight=False, soft_wrap=True, markup=False)
    console.print(f"granary api: http://{host}:{port}/ (OpenAPI: http://{host}:{port}/openapi.json)", highlight=False)
    proxies = [address.strip() for address in trusted_proxies.split(",") if address.strip()]
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@app.command()
def register(
    paths: list[Path] = typer.Argument(..., help="Task and pipeline files (or folders), in any format."),
    pool: str | None = typer.Option(None, "--pool", help="The work pool whose workers run them; none for serve."),
) -> None:
    """Register tasks and pipelines in Prefect without serving them: every runner can then execute them."""
    _register(paths, pool)


@app.command()
def deploy(
    pool: str = typer.Option(..., "--pool", help="The work pool whose workers run the executions."),
    deployments: Path = DeploymentsOption,
) -> None:
    """Register every task under deployments/ to a work pool (created if missing), for `granary worker`."""
    _register([deployments], pool)


def _print_errors(errors: list[Any], on: Console) -> None:
    """Each broken file, then its problems (field and line) one per line, as written: no markup read into them."""
    for error in errors:
        on.print(f"[red]error[/] {error.path}", highlight=False)
        for problem in error.problems:
            on.print(f"      {problem}", highlight=False, markup=False)


def _register(paths: list[Path], pool: str | None) -> None:
    from granary_flows.deployment import ensure_work_pool
    from granary_flows.registry import Registry, missing_image
    from granary_flows.server import prefect_client

    loaded, errors = read_files(paths)
    _print_errors(errors, err_console)
    if errors:
        raise fail(f"{len(errors)} broken definition(s): nothing was registered")
    if not loaded:
        raise fail("no task definitions found")
    try:
        with prefect_client() as client:
            if pool and ensure_work_pool(client, pool):
                console.print(f"created work pool {pool} (process)", highlight=False)
            registry = Registry(client)
            also = {e.definition.name: e.definition for e in loaded if e.source_format.value != "pipeline"}
            for entry in loaded:
                done = registry.register(entry, work_pool=pool, also=also)
                where = f" -> pool {pool}" if pool else ""
                console.print(
                    f"[green]registered[/] {_name_of(entry)} {done.version} ({done.runtime}, {done.source_format})"
                    f"{where} [dim]deployment {done.name}/{done.name}[/]",
                    highlight=False,
                )
                problem = missing_image(entry.definition)
                if problem:
                    err_console.print(Text.assemble(("warning:", "bold yellow"), f" {done.name}: {problem}"))
    except GranaryError as err:
        raise fail(str(err)) from err


@tasks_app.callback(invoke_without_command=True)
def tasks_default(context: typer.Context) -> None:
    """`granary tasks` alone lists them, as `granary tasks list` does."""
    if context.invoked_subcommand is None:
        tasks_list()


@tasks_app.command("list")
def tasks_list() -> None:
    """List the registered tasks and pipelines."""
    entries = _with_registry(lambda registry: registry.entries())
    table = Table(title="registered tasks", title_justify="left")
    for column in ("name", "title", "version", "runtime", "format", "pool", "registered"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry.name,
            entry.title or "",
            entry.version,
            entry.runtime,
            entry.source_format,
            entry.work_pool or "",
            f"{entry.registered:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def _with_registry(call: Callable[[Any], Any]) -> Any:
    """`call(registry)` on the configured server's registry; its errors end the command, said plainly."""
    from granary_flows.registry import Registry
    from granary_flows.server import prefect_client

    try:
        with prefect_client() as client:
            return call(Registry(client))
    except GranaryError as err:
        raise fail(str(err)) from err


@tasks_app.command("show")
def tasks_show(name: str = typer.Argument(..., help="A registered task or pipeline.")) -> None:
    """Print a registered task's stored definition (as YAML), and where it came from."""
    import yaml

    entry = _with_registry(lambda registry: registry.get(name))
    if entry is None:
        raise fail(f"no task named {name!r} is registered")
    console.print(
        f"# {entry.name} {entry.version}, registered {entry.registered:%Y-%m-%d %H:%M} from {entry.source} "
        f"({entry.source_format})",
        highlight=False,
        markup=False,
    )
    print(yaml.safe_dump(entry.definition, sort_keys=False), end="")


@tasks_app.command("remove")
def tasks_remove(name: str = typer.Argument(..., help="A registered task or pipeline.")) -> None:
    """Remove a task's deployment and stored definition; the history of its runs stays."""
    entry = _with_registry(lambda registry: registry.remove(name))
    console.print(f"[green]removed[/] {entry.name} (its runs stay)", highlight=False)


@app.command()
def run(
    task: str = typer.Argument(..., help="The task's name."),
    param: list[str] = typer.Option([], "--param", "-p", help="An argument, NAME=VALUE (VALUE read as JSON if it is)."),
    params: str | None = typer.Option(None, "--params", help="All arguments as one JSON object."),
    watch: bool = typer.Option(False, "--watch", help="Follow state and logs; print the results; exit 1 on failure."),
) -> None:
    """Start an execution of a registered TASK, its arguments validated here before anything is created."""
    from prefect.settings import PREFECT_UI_URL

    from granary_flows import submission
    from granary_flows.registry import Registry
    from granary_flows.server import prefect_client

    try:
        arguments = (submission.parse_params(params) if params else {}) | submission.parse_parameters(param)
        with prefect_client() as client:
            definition = Registry(client).definition(task)
            submission.validate(definition, arguments)
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
            Text.assemble(("state", "bold"), f" {name}" + (f": {message}" if message else "")), highlight=False
        ),
        on_log=lambda log: console.print(Text.assemble((f"{log.timestamp:%H:%M:%S} ", "dim"), log.message)),
        since=since,
    )
    if not final.state or not final.state.is_completed():
        raise fail(f"execution {flow_run_id} ended {final.state.name if final.state else 'unknown'}")
    _print_results(submission.results_document(client, str(flow_run_id)))


@app.command()
def resume(
    execution_id: str = typer.Argument(..., help="The execution (flow run) to resume."),
    param: list[str] = typer.Option([], "--param", "-p", help="A changed argument, NAME=VALUE (VALUE read as JSON)."),
    watch: bool = typer.Option(False, "--watch", help="Follow state and logs; print the results; exit 1 on failure."),
) -> None:
    """Resume a failed execution; a pipeline reruns only its failed and not-yet-run steps.

    With -p, a new execution with those arguments changed, reusing every pipeline step they do not reach.
    """
    from granary_flows import submission
    from granary_flows.registry import Registry
    from granary_flows.server import prefect_client

    try:
        changes = submission.parse_parameters(param)
        with prefect_client() as client:
            flow_run = submission.read_execution(client, execution_id)
            name = client.read_flow(flow_run.flow_id).name
            definition = _registered(Registry(client), name)
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


def _registered(registry: Any, name: str) -> Any:
    """The task or pipeline as registered now, to check changed arguments; None when it is no longer registered."""
    try:
        return registry.definition(name)
    except GranaryError:
        return None


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
    print(document.model_dump_json(indent=2))


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

    from granary_flows.formats import seed
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
    target = output or deployments_folder() / f"{manifest.job.name.lower()}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Seed job {manifest.job.name} {manifest.job.jobVersion}, imported from {image} by granary import-seed.\n"
        "# Fill in mounts (host paths), settings (values) and secrets (Prefect Secret block names) as needed.\n"
    )
    target.write_text(header + yaml.safe_dump(seed.deployment_document(document, image), sort_keys=False))
    console.print(f"[green]wrote[/] {target} [dim]({manifest.job.name} {manifest.job.jobVersion})[/]", highlight=False)


def _print_results(document: Any) -> None:
    """An execution's results (`documents.ExecutionDocument`), or a pipeline run's steps, as a table."""
    from granary_flows.documents import PipelineDocument

    if isinstance(document, PipelineDocument):
        return _print_pipeline(document)
    table = Table(title=f"results of {document.task} {document.execution_id}", title_justify="left")
    for column in ("title", "type", "size", "href"):
        table.add_column(column, overflow="fold")
    for asset in document.results:
        table.add_row(asset.title or "", asset.type or "", str(asset.size or ""), asset.href)
    console.print(table)
    if document.value is not None:
        console.print(f"value: {json.dumps(document.value)}", highlight=False, markup=False)


def _print_pipeline(document: Any) -> None:
    table = Table(title=f"steps of {document.pipeline} {document.execution_id}", title_justify="left")
    for column in ("step", "task", "status", "executions", "reused", "results"):
        table.add_column(column, overflow="fold")
    for name, step in document.steps.items():
        results = step.results or []
        per_item = results if results and isinstance(results[0], list) else [results]
        hrefs = [asset["href"] for assets in per_item for asset in assets or [] if "data" in asset.get("roles", [])]
        table.add_row(
            name,
            step.task,
            f"{step.status}" + (f" ({step.reason})" if step.reason else ""),
            str(len(step.executions)),
            str(sum(step.reused)),
            "\n".join(hrefs),
        )
    console.print(table)
    if document.resumes:
        console.print(f"resumes execution {document.resumes}", highlight=False)


if __name__ == "__main__":
    app()
