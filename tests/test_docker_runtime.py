"""The sandbox and the contract as a container sees them, on the real Docker engine."""

import contextlib
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import containers_of, execute

from granary_flows.definition import TaskDefinition
from granary_flows.errors import RuntimeUnavailable
from granary_flows.invocation import invocation_for
from granary_flows.runtimes.base import Attempt
from granary_flows.store import ResultsStore


def bare_attempt(task: TaskDefinition, execution_id: str, tmp_path: Path, runtime) -> Attempt:
    """An attempt with no arguments, straight to the runtime (no flow run around it)."""
    attempt = Attempt(
        execution_id=execution_id,
        flow_run_id=execution_id,
        number=1,
        task=task,
        invocation=invocation_for(task, {}, execution_id=execution_id, attempt=1),
        work_dir=tmp_path,
    )
    return runtime.prepare(attempt, ResultsStore(str(tmp_path / "results")))


def outputs(document) -> dict[str, str]:
    return {a["title"]: Path(urlparse(a["href"]).path).read_text() for a in document["results"]}


@pytest.fixture(scope="module")
def probed(client, runner, tmp_path_factory):
    scene = tmp_path_factory.mktemp("inputs") / "scene.txt"
    scene.write_text("pixels\n")
    flow_run = execute(client, "probe", scene=scene.as_uri(), bands=[3, 4])
    assert flow_run.state.is_completed(), flow_run.state.message
    return scene, flow_run.state.result()


def test_the_container_runs_without_capabilities_network_or_a_writable_root(probed):
    _, document = probed
    files = outputs(document)
    assert "CapEff:\t0000000000000000" in files["caps.txt"]
    assert "NoNewPrivs:\t1" in files["caps.txt"]
    assert files["interfaces.txt"].split() == ["lo"]
    assert files["root.txt"].strip() == "read-only"
    assert files["tmp.txt"].strip() == "writable"
    assert files["pids.txt"].strip() == "512"
    assert files["memory.txt"].strip() == str(48 * 1024 * 1024)


def test_arguments_arrive_as_json_as_a_file_and_one_variable_each(probed):
    scene, document = probed
    files = outputs(document)
    staged = "/granary/inputs/scene/scene.txt"
    assert json.loads(files["arguments.json"]) == {"scene": staged, "bands": [3, 4], "level": 2}
    env = dict(line.split("=", 1) for line in files["env.txt"].splitlines())
    assert env["LEVEL"] == "2" and env["BANDS"] == "[3, 4]" and env["SCENE"] == staged
    assert env["OUTPUT_DIR"] == "/granary/outputs" and env["GRANARY_ATTEMPT"] == "1"
    assert document["arguments"]["scene"] == scene.as_uri()  # the execution keeps the original URI


def test_a_file_input_is_staged_read_only(probed):
    _, document = probed
    files = outputs(document)
    assert files["scene-copy.txt"] == "pixels\n"
    assert files["input.txt"].strip() == "read-only"


def test_an_https_input_is_fetched_by_the_runtime(client, runner, http_server, monkeypatch):
    monkeypatch.setenv("GRANARY_ALLOW_HOSTS", http_server.removeprefix("http://"))  # loopback, allowed by name
    flow_run = execute(client, "probe", scene=f"{http_server}/tiles/scene.txt")
    assert flow_run.state.is_completed(), flow_run.state.message
    assert outputs(flow_run.state.result())["scene-copy.txt"] == "served pixels\n"


def test_an_unreadable_input_fails_before_any_container(client, runner, tmp_path):
    flow_run = execute(client, "probe", scene=(tmp_path / "absent.tif").as_uri())
    assert flow_run.state.is_failed()
    assert "cannot read input 'scene'" in flow_run.state.message and "absent.tif" in flow_run.state.message


def test_log_lines_reach_the_caller_while_the_container_still_runs(docker_runtime, tmp_path):
    task = TaskDefinition.model_validate(
        {
            "name": "talker",
            "validator": {"schema": {"type": "object"}},
            "resources": {"memory": 32},
            "runtime": {
                "docker": {"image": "granary/hello:1", "command": ["/bin/sh", "-c", "echo first; sleep 2; echo second"]}
            },
        }
    )
    seen: list[tuple[str, float]] = []
    started = time.monotonic()
    attempt = bare_attempt(task, "live-logs-test", tmp_path, docker_runtime)
    outcome = docker_runtime.run(attempt, lambda line: seen.append((line, time.monotonic() - started)))
    assert [line for line, _ in seen] == ["first", "second"]
    assert seen[0][1] < seen[1][1] - 1.5  # "first" arrived before the container slept
    assert outcome.exit_code == 0 and outcome.last_stdout_line == "second"
    # Kept until its outcome is stored, for a runner that dies meanwhile to re-attach to; then removed.
    assert attempt.container_id and docker_runtime.resuming(attempt.execution_id) == attempt.number
    docker_runtime.release(attempt)
    assert docker_runtime.stop("live-logs-test") == 0  # the container was removed


def test_a_missing_image_is_refused_before_anything_runs(docker_runtime, tmp_path):
    task = TaskDefinition.model_validate(
        {
            "name": "ghost",
            "validator": {"schema": {"type": "object"}},
            "runtime": {"docker": {"image": "granary/ghost:0"}},
        }
    )
    with pytest.raises(RuntimeUnavailable, match="granary/ghost:0"):
        docker_runtime.run(bare_attempt(task, "ghost", tmp_path, docker_runtime), print)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("www")
    (root / "tiles").mkdir()
    (root / "tiles" / "scene.txt").write_text("served pixels\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_docker_host_block_names_the_engine(prefect_server, docker_runtime):
    from prefect_docker.host import DockerHost

    from granary_flows.runtimes.docker import docker_client

    DockerHost(base_url="unix:///var/run/docker.sock").save("granary-test-engine", overwrite=True)
    assert docker_client(host_block="granary-test-engine").ping()
    DockerHost(base_url="unix:///nonexistent/docker.sock").save("granary-test-nowhere", overwrite=True)
    with pytest.raises(RuntimeUnavailable, match="DockerHost block 'granary-test-nowhere'"):
        docker_client(host_block="granary-test-nowhere")


def test_an_s3_input_is_fetched_by_the_runtime(client, runner, moto_server):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="granary-inputs")
    s3.put_object(Bucket="granary-inputs", Key="scenes/tile.txt", Body=b"pixels from s3\n")
    flow_run = execute(client, "probe", scene="s3://granary-inputs/scenes/tile.txt")
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert outputs(document)["scene-copy.txt"] == "pixels from s3\n"
    assert document["arguments"]["scene"] == "s3://granary-inputs/scenes/tile.txt"


def test_a_missing_s3_object_fails_before_any_container(client, runner, moto_server, docker_runtime):
    import boto3

    boto3.client("s3").create_bucket(Bucket="granary-empty")
    since = time.time()
    flow_run = execute(client, "probe", scene="s3://granary-empty/absent.tif")
    assert flow_run.state.is_failed()
    assert "cannot read input 'scene' from s3://granary-empty/absent.tif" in flow_run.state.message
    assert containers_of(docker_runtime, flow_run.id, since) == []


def test_looking_for_orphans_is_not_upset_by_containers_removed_meanwhile(docker_runtime):
    """Other runs remove their containers at any moment; a serve starting meanwhile must not fail on one."""
    import contextlib

    from docker.errors import DockerException

    from granary_flows.runtimes.base import LABEL_EXECUTION, LABEL_SERVER, current_server

    churning = threading.Event()

    def churn() -> None:
        while not churning.is_set():
            with contextlib.suppress(DockerException):  # stop() below may remove it first
                docker_runtime.client.containers.run(
                    "granary/hello:1",
                    ["true"],
                    remove=True,
                    network_mode="none",
                    labels={LABEL_EXECUTION: "churn", LABEL_SERVER: current_server()},
                )

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(100):
            assert docker_runtime.orphans(lambda runner: False, lambda flow_run: True) == []
        for _ in range(10):
            docker_runtime.stop("churn")  # the same listing, for a cancellation
    finally:
        churning.set()
        for thread in threads:
            thread.join(timeout=30)


class EngineProxy:
    """A TCP front for the local engine's socket whose open connections can be broken, as a restarting engine or a
    dropped network would."""

    def __init__(self, socket_path: str = "/var/run/docker.sock"):
        import socket

        self.socket_path = socket_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                front, _ = self.server.accept()
            except OSError:
                return
            back = socket.socket(socket.AF_UNIX)
            back.connect(self.socket_path)
            self.open += [front, back]
            for source, target in ((front, back), (back, front)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source, target) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.close()

    def break_open_connections(self) -> None:
        import socket

        for end in self.open:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        self.open = []

    def close(self) -> None:
        self.server.close()
        self.break_open_connections()


def test_a_broken_engine_connection_is_said_as_such_not_as_a_timeout(tmp_path):
    """A task without a timeout whose wait loses the engine's connection: the attempt ends with the engine named, and
    its container is gone (it used to raise a TypeError formatting the missing timeout)."""
    import docker

    from granary_flows.runtimes.docker import DockerRuntime

    proxy = EngineProxy()
    runtime = DockerRuntime(docker.DockerClient(base_url=f"tcp://127.0.0.1:{proxy.port}"))
    task = TaskDefinition.model_validate(
        {
            "name": "waiter",
            "validator": {"schema": {"type": "object"}},
            "resources": {"memory": 32},
            "runtime": {"docker": {"image": "granary/hello:1", "command": ["/bin/sh", "-c", "echo up; sleep 60"]}},
        }
    )
    seen: list[str] = []
    threading.Timer(1.5, proxy.break_open_connections).start()
    try:
        outcome = runtime.run(bare_attempt(task, "broken-engine-test", tmp_path, runtime), seen.append)
    finally:
        proxy.close()
    assert outcome.exit_code is None and "connection to the Docker engine broke" in (outcome.killed_reason or "")
    assert "timed out" not in outcome.killed_reason
    assert seen == ["up"]
    left = docker.from_env().containers.list(all=True, filters={"label": "granary.execution-id=broken-engine-test"})
    assert left == []
