"""Shared fixtures: one real Prefect server, one Docker engine and one in-process runner per test session.

The environment is set before Prefect is imported, so every client in this process talks to the session's server.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import pytest

SESSION_DIR = Path(tempfile.mkdtemp(prefix="granary-tests-"))
SAMPLES = Path(os.environ.get("GRANARY_CACHE", Path.home() / ".cache" / "granary-flows")) / "sample"
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT = _free_port()
MOTO_PORT = _free_port()
API_PORT = _free_port()
SUBSCRIBER_PORT = _free_port()
# Prefect fixes its settings when first imported; threads without a settings context of their own fall back to them.
assert "prefect" not in sys.modules, "Prefect was imported before the test environment was set"
os.environ |= {
    "PREFECT_HOME": str(SESSION_DIR / "prefect"),
    "PREFECT_API_URL": f"http://127.0.0.1:{PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GRANARY_RESULTS_URI": str(SESSION_DIR / "results"),
    "GRANARY_HOME": str(SESSION_DIR / "home"),  # never the user's ~/.granary
    "GRANARY_API_URL": f"http://127.0.0.1:{API_PORT}",  # the session's `granary api` (the api fixture starts it)
    # The operator's policy: inputs from the sample and the tests' own folders; nothing else on this machine.
    "GRANARY_ALLOW_FILE_ROOTS": os.pathsep.join(
        [str(SAMPLES), str(SESSION_DIR), str(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}")]
    ),
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
    "COLUMNS": "250",  # rich wraps at 80 columns otherwise
    # AWS is moto in server mode on this machine (started by the moto fixture); botocore honours AWS_ENDPOINT_URL.
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Closed by default, as everything granary starts: every server of the session requires one credential, and every
# client (this process, and the granary commands it starts) sends it.
from rest import one_credential  # noqa: E402

one_credential()
from helpers import BUCKET, DEPLOYMENTS, QUEUE, TEST_TASKS, register_definitions, running_moto  # noqa: E402

EXAMPLES = ROOT / "examples" / "batch"
from prefect.client.orchestration import SyncPrefectClient, get_client  # noqa: E402
from prefect.logging.handlers import APILogWorker  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """The session's Prefect server, on PostgreSQL: the database a shared server runs on.

    On SQLite, Prefect's own server fails writes with "database is locked" and at times holds its write lock for its
    full 60 s busy timeout while runs, creations and its own services (marking runs late) write at once; on a loaded
    CI machine that stalled runs for minutes and outlasted every client's retries. The embedded SQLite default is
    still what `scripts/quickstart.sh` and the tests that start servers of their own (test_auth, test_deployment,
    test_worker) run on; GRANARY_TEST_DATABASE=sqlite runs this session on it too.
    """
    from postgres import local_postgres

    from granary_flows.server import local_server

    with contextlib.ExitStack() as stack:
        database = {}
        if os.environ.get("GRANARY_TEST_DATABASE", "postgresql") != "sqlite":
            url = stack.enter_context(local_postgres(_free_port()))
            database["PREFECT_API_DATABASE_CONNECTION_URL"] = url
        log_file = SESSION_DIR / "prefect-server.log"
        yield stack.enter_context(local_server(port=PORT, log_file=log_file, extra_env=database))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto in server mode on 127.0.0.1: the local stand-in for S3, Batch, CloudWatch Logs and IAM."""
    # Batch jobs run as containers on the local engine; host networking lets them reach moto on 127.0.0.1.
    with (
        open(SESSION_DIR / "moto.log", "wb") as log,
        running_moto(MOTO_PORT, log, MOTO_DOCKER_NETWORK_MODE="host") as url,
    ):
        assert url == os.environ["AWS_ENDPOINT_URL"]
        yield url


@pytest.fixture(scope="session")
def docker_runtime():
    from granary_flows.runtimes.docker import DockerRuntime, docker_client

    return DockerRuntime(docker_client(max_pool_size=64))


@pytest.fixture(scope="session")
def results_root() -> Path:
    return SESSION_DIR / "results"


@pytest.fixture(scope="session")
def client(prefect_server: str) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as prefect_client:
        yield prefect_client


@pytest.fixture(scope="session")
def runner(prefect_server: str, client: SyncPrefectClient, docker_runtime: Any) -> Iterator[Any]:
    """`granary serve`'s runner, serving the example tasks and the test tasks, in a thread of this process."""
    from granary_flows.catalog import FixedCatalog
    from granary_flows.definition import RuntimeKind
    from granary_flows.restarts import new_runner_id
    from granary_flows.runner import InProcessRunner
    from granary_flows.store import ResultsStore

    served = register_definitions(client, [DEPLOYMENTS, TEST_TASKS])
    runner_id = new_runner_id()
    in_process = InProcessRunner(
        FixedCatalog(served),
        ResultsStore(),
        {RuntimeKind.DOCKER: docker_runtime},
        runner_id,
        limit=8,
        poll_interval=0.2,
    )
    stop = threading.Event()
    thread = threading.Thread(target=in_process.serve, args=(stop,), daemon=True)
    thread.start()
    yield in_process
    stop.set()
    thread.join(timeout=30)
    APILogWorker.drain_all(timeout=5)  # before the server stops


@pytest.fixture(scope="session")
def aws(moto_server: str) -> SimpleNamespace:
    """The queue and job definitions the Batch tasks use, created by the example's own script, and a bucket."""
    sys.path.insert(0, str(EXAMPLES))
    import create_resources

    create_resources.ensure_queue(QUEUE)
    job_environment = create_resources.stand_in_environment(moto_server)
    create_resources.register_definition(
        "granary-probe",
        "granary/ndvi:1",
        ["python3", "/probe/probe.py", "Ref::label"],
        job_environment,
        mounts={str(ROOT / "tests" / "batch"): "/probe"},
    )
    create_resources.register_definition(**create_resources.NDVI_DEFINITION, environment=job_environment)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return SimpleNamespace(s3=s3, batch=boto3.client("batch"), logs=boto3.client("logs"), endpoint=moto_server)


@pytest.fixture(scope="session")
def batch_runner(client: Any, aws: SimpleNamespace, docker_runtime: Any) -> Iterator[SimpleNamespace]:
    """A runner with an S3 results root serving the Batch test tasks, the Batch ndvi example and a Docker task."""
    from granary_flows.catalog import FixedCatalog
    from granary_flows.definition import RuntimeKind
    from granary_flows.restarts import new_runner_id
    from granary_flows.runner import InProcessRunner
    from granary_flows.runtimes.batch import BatchRuntime, Polling
    from granary_flows.store import ResultsStore

    served = register_definitions(client, [ROOT / "tests" / "batch" / "tasks", EXAMPLES])
    store = ResultsStore(f"s3://{BUCKET}/runs")
    # Small log pages, so that thousands of lines cross many pages.
    batch = BatchRuntime(store, Polling(minimum=0.5, maximum=2, log_page=700))
    runtimes = {RuntimeKind.DOCKER: docker_runtime, RuntimeKind.BATCH: batch}
    runner = InProcessRunner(FixedCatalog(served), store, runtimes, new_runner_id(), limit=8, poll_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=runner.serve, args=(stop,), daemon=True)
    thread.start()
    yield SimpleNamespace(store=store, batch=batch, runtimes=runtimes)
    stop.set()
    thread.join(timeout=30)
    APILogWorker.drain_all(timeout=5)


@pytest.fixture(scope="session")
def identities() -> SimpleNamespace:
    """Who the API knows, made here: static tokens (an admin, alice with the role ndvi-users, bob with none), and an
    OIDC issuer's signing key, whose JWKS the API reads from a file."""
    from helpers import OIDC, write_identities

    return write_identities(SESSION_DIR / "identities", OIDC)


@pytest.fixture(scope="session")
def api(prefect_server: str, runner: Any, identities: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """`granary api` in a process of its own, on this session's server, identifying users by token and by OIDC."""
    from helpers import granary_serve, read_until, stop_process

    from granary_flows.server import wait_until

    process = granary_serve(
        "--port", str(API_PORT), command="api",
        GRANARY_API_AUTH="tokens,oidc", GRANARY_API_TOKENS_FILE=str(identities.tokens_file),
        GRANARY_OIDC_ISSUER=identities.issuer, GRANARY_OIDC_AUDIENCE=identities.audience,
        GRANARY_OIDC_JWKS_FILE=str(identities.jwks_file),
        GRANARY_ALLOW_HOSTS=f"127.0.0.1:{SUBSCRIBER_PORT}",  # the tests' subscriber, and nothing else internal
    )  # fmt: skip
    url = f"http://127.0.0.1:{API_PORT}"
    try:
        read_until(process, "granary api:", timeout=180)  # and its output goes on being read, so it never blocks
        wait_until(lambda: httpx.get(f"{url}/conformance", timeout=2).status_code == 200, "granary api", process)
        yield SimpleNamespace(url=url, process=process, subscriber_port=SUBSCRIBER_PORT, **vars(identities))
    finally:
        stop_process(process)


@pytest.fixture
def s3_api(api, aws, batch_runner, monkeypatch) -> Iterator[Any]:
    """A second `granary api` whose results root is the Batch runner's (S3): an API reads the root its runners write,
    and its webhook is the one jobs are given (GRANARY_API_URL)."""
    from helpers import BUCKET, granary_serve, read_until, stop_process

    from granary_flows.server import free_port, wait_until

    port = free_port()
    process = granary_serve(
        "--port", str(port), command="api", GRANARY_RESULTS_URI=f"s3://{BUCKET}/runs", GRANARY_API_AUTH="tokens",
        GRANARY_API_TOKENS_FILE=str(api.tokens_file),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("GRANARY_API_URL", url)
    try:
        read_until(process, "granary api:", timeout=180)
        wait_until(lambda: httpx.get(f"{url}/conformance", timeout=2).status_code == 200, "granary api", process)
        yield type(api)(**(vars(api) | {"url": url}))
    finally:
        stop_process(process)
