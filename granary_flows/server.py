"""The Prefect server granary starts: the embedded default (a local server with SQLite, started when no
`PREFECT_API_URL` is set), and the configuration every server granary documents runs with.

Granary runs only the Prefect services its features need: the scheduler (schedules), the task run recorder (task
runs), and the event distributor (the live event stream its runners wait on). Each of the others costs the server CPU
for every execution (measured: docs/benchmarks.md) and gives granary's users nothing they rely on; what a user loses
with each is said in LEAN_SERVICES. `GRANARY_SERVER_SERVICES=prefect` keeps Prefect's own defaults, and any
`PREFECT_SERVER_SERVICES_*` already set is left as it is.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from granary_flows.errors import GranaryError
from granary_flows.server_auth import SERVER_VARIABLE, server_credential, use_for_client
from granary_flows.server_log import follow, server_log_path

# What runs Prefect's server: its own command, with the garbage collector off the event loop (`server_process`).
SERVER_PROCESS = "granary_flows.server_process"
CREDENTIAL_HINT = (
    "it requires credentials: set PREFECT_API_AUTH_STRING (`granary server credentials` prints those of a server "
    "granary started on this machine)"
)
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
# The Prefect services granary's servers run without, and what a user loses with each.
LEAN_SERVICES = {
    "late_runs": "runs are never marked Late (PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS can keep it, later)",
    "foreman": "work pools, their queues and workers are never marked offline when heartbeats stop",
    "cancellation_cleanup": "a run left Cancelling by a runner that died is not ended for it (granary's runners end "
    "their own cancelled runs)",
    "pause_expirations": "a paused run is not failed when its pause times out (granary's runs are never paused)",
    "repossessor": "expired concurrency-limit leases are not reclaimed (granary uses no concurrency limits)",
    "cleanup_reconciler": "resources of runs that ended are not reconciled for cleanup",
    "triggers": "automations never fire, Prefect's heartbeat automation (a vanished host's runs) among them",
    "event_persister": "events are not stored: the UI's event feed and /events/filter are empty (the live event "
    "stream, which granary's runners use, goes on)",
}

# Prefect settings granary's servers run with, and what each costs.
TUNED = {
    # The task run recorder writes the attempts' states in batches (Prefect's default writes each event in a
    # transaction of its own): a third less server CPU and a fifth of PostgreSQL's per execution. An attempt's state
    # shows on the run page up to a second later.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "10",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(
    port: int | None = None, log_file: Path | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1 (as `server_process` runs it), wait until healthy, and stop it on
    exit. Its output goes to `log_file` (default `server_log.server_log_path(port)`), rotated.

    Yields:
        The API URL (`http://127.0.0.1:PORT/api`).

    Raises:
        GranaryError: when it is not healthy within 60 s; its log is named.
    """
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = started_environment(api_url, extra_env or {})
    log = log_file or server_log_path(port)
    process = subprocess.Popen(
        [sys.executable, "-m", SERVER_PROCESS, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    following = follow(process, log)
    try:
        try:
            wait_healthy(api_url, process)
        except GranaryError as err:
            raise GranaryError(f"{err}; its log: {log}") from err
        yield api_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        following.join(timeout=5)


def started_environment(api_url: str, extra_env: dict[str, str]) -> dict[str, str]:
    """The environment of a server `local_server` starts: this process's, with `extra_env` taken into account before
    the service set is decided (so `GRANARY_SERVER_SERVICES=prefect` there gives Prefect's defaults).

    Example:
        >>> given = {"GRANARY_SERVER_SERVICES": "prefect", "PREFECT_SERVER_API_AUTH_STRING": "granary:secret"}
        >>> started_environment("http://h/api", given).get(
        ...     "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "Prefect's default")
        "Prefect's default"
    """
    env = server_environment(os.environ | extra_env) | {"PREFECT_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_AUTH_STRING", None)
    return env


def server_environment(environ: Any) -> dict[str, str]:
    """The environment a Prefect server granary starts runs with: `environ`, quiet, requiring its credential
    (`server_auth`), without LEAN_SERVICES and with the TUNED settings (unless `GRANARY_SERVER_SERVICES=prefect`; a
    variable already set is kept).

    Example:
        >>> given = {"PREFECT_SERVER_API_AUTH_STRING": "granary:secret"}
        >>> server_environment(given)["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"]
        'false'
        >>> server_environment(given | {"GRANARY_SERVER_SERVICES": "prefect"}).get(
        ...     "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED")
    """
    env = dict(environ) | QUIET
    credential = server_credential(env)
    if credential:
        env[SERVER_VARIABLE] = credential
    if env.get("GRANARY_SERVER_SERVICES", "lean") == "lean":
        for service in LEAN_SERVICES:
            env.setdefault(f"PREFECT_SERVER_SERVICES_{service.upper()}_ENABLED", "false")
        for name, value in TUNED.items():
            env.setdefault(name, value)
    return env


def wait_healthy(api_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    wait_until(lambda: is_healthy(api_url), f"the Prefect server at {api_url}", process, timeout)


def wait_until(
    ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> None:
    """Wait until `ready()` is true; fail early if `process` exits.

    Raises:
        GranaryError: naming `what` when it is not ready within `timeout` seconds or its process exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise GranaryError(f"{what} exited with code {process.returncode}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise GranaryError(f"{what} was not ready after {timeout:g} s")


def local_port() -> int:
    """Where `granary serve` starts its local server, and where other commands look for it: `GRANARY_LOCAL_PORT`."""
    return int(os.environ.get("GRANARY_LOCAL_PORT", "4200"))


def is_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def configured_api_url(port: int | None = None) -> str | None:
    """`PREFECT_API_URL`, else the local server on `port` (default `GRANARY_LOCAL_PORT`, 4200) if one answers there.

    Without either, Prefect would start a throwaway server inside this process, with none of our deployments. A
    server on any other port is never used: `granary serve --port P` means the server on P. A server on this machine
    is given its credential (`server_auth.use_for_client`).
    """
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        local_api = f"http://127.0.0.1:{port or local_port()}/api"
        url = local_api if is_healthy(local_api) else None
    if url:
        use_for_client(url)
    return url


@contextmanager
def prefect_client() -> Iterator[Any]:
    """A synchronous Prefect client for the configured server; connection failures become a clear GranaryError.

    Raises:
        GranaryError: when no server is configured or it does not answer.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    url = configured_api_url()
    if not url:
        raise GranaryError(
            "no Prefect server: set PREFECT_API_URL, or start `granary serve`, "
            f"which starts one on 127.0.0.1:{local_port()}"
        )
    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    if os.environ.get("PREFECT_API_AUTH_STRING"):
        updates[PREFECT_API_AUTH_STRING] = os.environ["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        try:
            yield client
        except httpx.HTTPStatusError as err:
            from granary_flows.submission import server_reason

            status = err.response.status_code
            hint = f"; {CREDENTIAL_HINT}" if status == 401 else ""
            raise GranaryError(
                f"the Prefect server at {url} refused the request ({status}): {server_reason(err.response)}{hint}"
            ) from err
        except httpx.HTTPError as err:
            raise GranaryError(f"the Prefect server at {url} did not answer: {err}") from err
