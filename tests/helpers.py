"""Helpers the tests share: starting and waiting for executions, reading what they left, and processes of their own.

Imported by test modules after `conftest.py` has set the environment (Prefect reads it when first imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import rest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = ROOT / "deployments"
TEST_TASKS = ROOT / "tests" / "tasks"
# Public specifications' schemas and examples, copied into the repository (tests/data/reference/README.md).
REFERENCE = ROOT / "tests" / "data" / "reference"
BUCKET = "granary-results"  # the Batch tests' results bucket, on moto
QUEUE = "granary-queue"
SAMPLE_TIFF = Path(os.environ.get("GRANARY_CACHE", Path.home() / ".cache" / "granary-flows")) / "sample" / "scene.tif"


@contextmanager
def running_moto(port: int, log: Any = None, **environment: str) -> Iterator[str]:
    """moto in server mode on 127.0.0.1:`port`, with extra `environment`, stopped on exit. Yields its endpoint."""
    from granary_flows.server import wait_until

    output = log if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        # moto's server, with Batch array jobs made to behave as AWS's (tests/moto_server.py says how)
        [sys.executable, str(Path(__file__).with_name("moto_server.py")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=output,
        stderr=output,
        env=os.environ | environment,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500, "moto", process)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=15)


def register_definitions(client: SyncPrefectClient, paths: list[Path], work_pool: str | None = None) -> dict[Any, Any]:
    """Register every definition under `paths` as `granary register` does; deployment id -> definition (a pipeline
    with its tasks attached)."""
    from granary_flows.loading import read_files
    from granary_flows.registry import Registry

    loaded, errors = read_files(paths)
    assert not errors, errors
    registry = Registry(client)
    also = {e.definition.name: e.definition for e in loaded if e.source_format.value != "pipeline"}
    entries = [registry.register(entry, work_pool=work_pool, also=also) for entry in loaded]
    return {entry.deployment_id: registry.definition(entry.name) for entry in entries}


def start(client: SyncPrefectClient, task: str, server_checks: bool = True, **arguments: Any) -> FlowRun:
    """Create a run of the task's deployment; `server_checks=False` is the UI form with validation switched off."""
    deployment = client.read_deployment_by_name(f"{task}/{task}")
    if server_checks:
        return client.create_flow_run_from_deployment(deployment.id, parameters=arguments)
    response = api_post(
        f"/deployments/{deployment.id}/create_flow_run", {"parameters": arguments, "enforce_parameter_schema": False}
    )
    return FlowRun.model_validate(response.json())


def api_post(path: str, body: dict[str, Any], api: str | None = None, timeout: float = 30) -> httpx.Response:
    """POST to the REST API of the session's server (or of `api`), retrying a busy SQLite server's 503 as Prefect's
    own client does."""
    return _api_request("POST", path, body, api, timeout)


def api_get(path: str, api: str | None = None) -> httpx.Response:
    """GET from the REST API, like `api_post`."""
    return _api_request("GET", path, None, api)


def _api_request(
    method: str, path: str, body: dict[str, Any] | None, api: str | None, timeout: float = 30
) -> httpx.Response:
    return rest.request(method, f"{api or os.environ['PREFECT_API_URL']}{path}", body, timeout=timeout)


def wait_final(client: SyncPrefectClient, flow_run_id: Any, timeout: float = 180) -> FlowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow_run = client.read_flow_run(flow_run_id)
        if flow_run.state and flow_run.state.is_final():
            return flow_run
        time.sleep(0.2)
    raise AssertionError(f"flow run {flow_run_id} not final after {timeout} s: {flow_run.state}")


def cancel_and_time(client: SyncPrefectClient, flow_run_id: Any, force: bool = True) -> float:
    """Ask for a run's cancellation as the UI does; seconds until it ended Cancelled."""
    from prefect.states import Cancelling

    client.set_flow_run_state(flow_run_id, Cancelling(), force=force)
    asked = time.monotonic()
    while not (state := client.read_flow_run(flow_run_id).state).is_final():
        assert time.monotonic() - asked < 60, f"still {state.name} a minute after the cancel"
        time.sleep(0.05)
    took = time.monotonic() - asked
    assert state.is_cancelled(), state
    return took


def execute(
    client: SyncPrefectClient, task: str, timeout: float = 90, server_checks: bool = True, **arguments: Any
) -> FlowRun:
    """Start an execution through its deployment and wait until it is final."""
    return wait_final(client, start(client, task, server_checks, **arguments).id, timeout)


def logs_of(
    client: SyncPrefectClient,
    flow_run_id: Any,
    settle: float = 1.0,
    until: Callable[[list[str]], bool] | None = None,
    timeout: float = 60,
) -> list[str]:
    """The run's log lines, in order; with `until`, read again until it holds of them (thousands of lines take
    their runner's log worker several batches to send)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    time.sleep(settle)  # logs arrive in batches
    deadline = time.monotonic() + timeout
    while True:
        messages: list[str] = []
        while True:  # the server gives at most 200 a call
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC,
                limit=200,
                offset=len(messages),
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                break
        if until is None or until(messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


def task_runs_of(client: SyncPrefectClient, flow_run_id: Any, timeout: float = 15) -> list[Any]:
    """The run's task runs (its attempts), newest first, once each is final: the server records them from the
    runner's events in batches, up to a second after the run's own state (server.TUNED)."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    while True:
        found = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
        )
        if (found and all(run.state and run.state.is_final() for run in found)) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def artifacts_of(client: SyncPrefectClient, flow_run_id: Any) -> list[Any]:
    """The run's artifacts, read through the REST API (3.8.8's sync client sends nulls the server refuses)."""
    from prefect.client.schemas.objects import Artifact

    response = api_post(
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "sort": "CREATED_DESC", "limit": 200, "offset": 0},
    )
    return [Artifact.model_validate(item) for item in response.json()]


def containers_of(docker_runtime: Any, execution_id: Any, since: float) -> list[str]:
    """Ids of every container the engine created for an execution (a pipeline's steps included) since `since`, from
    the engine's event log."""
    from granary_flows.runtimes.base import LABEL_FLOW_RUN

    events = docker_runtime.client.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{LABEL_FLOW_RUN}={execution_id}"},
    )
    return [event["id"] for event in events if event["timeNano"] >= since * 1e9]  # `since` above is whole seconds


def read_until(process: Any, marker: str, timeout: float) -> str:
    """A subprocess's output (text mode, stdout piped) until `marker` appears in it; the rest of its output
    collects in `process.output`."""
    lines: list[str] = []
    process.output = lines  # type: ignore[attr-defined]  # what it prints later goes on arriving here
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + timeout
    while marker not in "".join(lines):
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        time.sleep(0.2)
    return "".join(lines)


def granary_serve(
    *arguments: str, command: str = "serve", unset: tuple[str, ...] = (), cwd: Path = ROOT, **environment: str
) -> subprocess.Popen:
    """`granary serve ARGUMENTS` (or another `command`) in a process of its own, in `cwd`, with extra `environment`
    and without the `unset` variables; its output is piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "granary_flows.cli", command, *arguments],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k not in unset} | environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def task_copy(source: str, folder: Path, name: str, **fields: Any) -> Path:
    """Write tests/tasks/`source`.yaml (or tests/batch/tasks/, deployments/) under a new `name`, with top-level
    `fields` replaced: a deployment of its own, which the session's runner does not serve. The one way tests write a
    task file."""
    import yaml

    folders = (TEST_TASKS, TEST_TASKS.parent / "batch" / "tasks", DEPLOYMENTS)
    path = next(folder / f"{source}.yaml" for folder in folders if (folder / f"{source}.yaml").exists())
    document = yaml.safe_load(path.read_text())
    document |= {"name": name} | fields
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def stop_process(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def runner_for(served: Any, store: Any, runtimes: dict[Any, Any], limit: int = 4) -> Iterator[Any]:
    """An in-process runner (as `granary serve` runs) for these deployments (deployment id -> definition, or a
    `Catalog`), in a thread, stopped on exit."""
    from prefect.logging.handlers import APILogWorker

    from granary_flows.catalog import Catalog, FixedCatalog
    from granary_flows.restarts import new_runner_id
    from granary_flows.runner import InProcessRunner

    catalog = served if isinstance(served, Catalog) else FixedCatalog(served)
    runner = InProcessRunner(catalog, store, runtimes, new_runner_id(), limit=limit, poll_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=runner.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(timeout=30)
        APILogWorker.drain_all(timeout=5)


OIDC = {"issuer": "http://127.0.0.1/realms/granary", "audience": "granary", "kid": "granary-test-key"}
TOKENS = {"admin": "admin-token-0123456789", "alice": "alice-token-0123456789", "bob": "bob-token-0123456789"}


def write_identities(folder: Path, oidc: dict[str, str]) -> Any:
    """A tokens file (its tokens stored as sha256 digests) and an RSA key with its JWKS, for the API's tests."""
    import hashlib
    import json
    from types import SimpleNamespace

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "token": f"sha256:{hashlib.sha256(TOKENS['admin'].encode()).hexdigest()}",
            "subject": "root",
            "roles": ["admin"],
        },
        {"token": TOKENS["alice"], "subject": "alice", "roles": ["ndvi-users"]},
        {"token": TOKENS["bob"], "subject": "bob", "roles": []},
    ]
    tokens_file = folder / "tokens.json"
    tokens_file.write_text(json.dumps(entries))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": oidc["kid"], "use": "sig"}
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    return SimpleNamespace(tokens_file=tokens_file, jwks_file=jwks_file, key=key, tokens=TOKENS, **oidc)


def oidc_token(identities: Any, subject: str, roles: list[str], **claims: Any) -> str:
    """A JWT as a Keycloak issuer would sign it (roles in realm_access.roles); `claims` overrides any claim."""
    import time

    import jwt

    now = int(time.time())
    payload = {
        "iss": identities.issuer, "aud": identities.audience, "sub": f"id-{subject}", "preferred_username": subject,
        "iat": now, "exp": now + 3600, "realm_access": {"roles": roles},
    } | claims  # fmt: skip
    return jwt.encode(payload, identities.key, algorithm="RS256", headers={"kid": identities.kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


OGC_SCHEMAS = REFERENCE / "ogcapi-processes-1.0" / "schemas"


def ogc_valid(document: Any, schema: str) -> list[str]:
    """What keeps `document` from matching one of OGC API - Processes 1.0's schemas (e.g. `statusInfo.yaml`),
    its `$ref`s read from the sibling files; empty when it matches."""
    import yaml
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    def retrieve(uri: str) -> Resource:
        name = uri.rsplit("/", 1)[-1]
        contents = yaml.safe_load((OGC_SCHEMAS / name).read_text())
        if name == "inputValueNoObject.yaml":
            # Its `oneOf` lists `number` beside `integer`, and `string` beside the `format: byte` string: by the
            # letter, no integer and no string is valid anywhere. Read as `anyOf`, its evident intent.
            contents = {"anyOf": contents.pop("oneOf"), **contents}
        return Resource.from_contents(contents, default_specification=DRAFT4)

    from referencing.jsonschema import DRAFT4

    registry = Registry(retrieve=retrieve)
    root = yaml.safe_load((OGC_SCHEMAS / schema).read_text())
    validator = Draft202012Validator({"$id": f"file:///{schema}", **root}, registry=registry)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
