"""The `granary` command as a user types it."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, api_get, api_post, granary_serve, read_until, start, stop_process, task_copy, wait_final
from typer.testing import CliRunner

from granary_flows.cli import app
from granary_flows.runtimes.base import LABEL_EXECUTION, LABEL_RUNNER, LABEL_SERVER, LABEL_TASK
from granary_flows.server import free_port

cli = CliRunner()


@pytest.mark.unit
def test_check_passes_the_shipped_tasks():
    result = cli.invoke(app, ["check", str(ROOT / "deployments"), str(ROOT / "tests" / "tasks")])
    assert result.exit_code == 0, result.output
    assert "ok    " in result.output and "ndvi 1.0.0 (docker, granary-flows)" in result.output


@pytest.mark.unit
def test_check_names_the_broken_file_and_field_and_fails(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: x\nvalidator: {schema: {type: object}}\nruntime:\n  docker: {}\n")
    result = cli.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "broken.yaml" in result.output and "runtime.docker.image (line 4): Field required" in result.output


def test_run_refuses_invalid_arguments_before_creating_anything(client, runner):
    before = client.count_flow_runs()
    result = cli.invoke(app, ["run", "ndvi", "-p", "redBand=0", "-p", "tiffLocation=nope"])
    assert result.exit_code == 1
    assert "$.redBand: 0 is less than the minimum of 1" in result.output
    assert "$.tiffLocation: 'nope' is not a 'uri'" in result.output
    assert "$: 'nirBand' is a required property" in result.output
    assert client.count_flow_runs() == before


def test_run_refuses_what_prefects_database_cannot_store_before_creating_anything(client, runner):
    before = client.count_flow_runs()
    result = cli.invoke(app, ["run", "hello", "--params", '{"name": "a\\u0000b", "times": 100000000000000000000}'])
    assert result.exit_code == 1
    assert "$.name: contains the NUL character (\\u0000), which Prefect's database cannot store" in result.output
    assert "$.times: 100000000000000000000 is larger than a 64-bit integer" in result.output
    assert client.count_flow_runs() == before


def test_run_watch_streams_logs_and_prints_the_results(runner):
    result = cli.invoke(app, ["run", "hello", "-p", "name=Lin", "-p", "times=2", "--watch"])
    assert result.exit_code == 0, result.output
    assert "Hello, Lin! (2/2)" in result.output
    assert "state Completed" in result.output
    assert "greeting.txt" in result.output


def test_run_watch_exits_non_zero_when_the_execution_fails(runner):
    result = cli.invoke(app, ["run", "bad-data", "--watch"])
    assert result.exit_code == 1
    assert "the input is corrupt" in result.output
    assert "ended Failed" in result.output


def test_run_of_an_unknown_task_names_the_known_ones(runner):
    result = cli.invoke(app, ["run", "nope"])
    assert result.exit_code == 1 and "no task named 'nope' is registered on this Prefect server" in result.output
    assert "hello, " in result.output and "ndvi, " in result.output


def test_results_prints_the_results_document(client, runner):
    flow_run = wait_final(client, start(client, "hello", name="Bo").id)
    result = cli.invoke(app, ["results", str(flow_run.id)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["execution_id"] == str(flow_run.id) and document["results"][0]["title"] == "greeting"


def test_results_of_a_failed_execution_says_why(client, runner):
    flow_run = wait_final(client, start(client, "bad-data").id)
    result = cli.invoke(app, ["results", str(flow_run.id)])
    assert result.exit_code == 1 and "is Failed: it has no results" in result.output


def test_serve_refuses_a_results_root_that_cannot_be_written():
    result = cli.invoke(app, ["serve", "--results", "/proc/granary-cannot-write", "-d", str(ROOT / "deployments")])
    assert result.exit_code == 1 and "cannot be written" in result.output


@contextmanager
def stand_in_on_the_default_port():
    """Something answering Prefect's health check on 127.0.0.1:4200, where a user's own server would be (the
    quickstart's): it counts the requests it gets. When that port is taken already (a real user's server), that is the
    stand-in, and nothing is counted."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *_):
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", 4200), Healthy)
    except OSError:  # a server of the user's own answers there
        yield None
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield asked
    finally:
        server.shutdown()
        server.server_close()


def test_serve_starts_its_own_server_reaps_orphans_runs_and_stops_on_sigint(docker_runtime, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    orphan = docker_runtime.client.containers.run(
        "granary/hello:1",
        ["sleep", "300"],
        detach=True,
        network_mode="none",
        labels={
            LABEL_EXECUTION: "00000000-0000-0000-0000-000000000000",
            LABEL_TASK: "hello",
            LABEL_RUNNER: f"{os.uname().nodename}:999999:dead",
            LABEL_SERVER: api,
        },
    )
    with stand_in_on_the_default_port() as asked:
        serve = granary_serve(
            "--port",
            str(port),
            unset=("PREFECT_API_URL",),
            PREFECT_HOME=str(tmp_path / "prefect"),
            GRANARY_RESULTS_URI=str(tmp_path / "results"),
            COLUMNS="200",
        )
        try:
            output = read_until(serve, "waiting for runs", timeout=180)
            assert output.startswith(f"Prefect server: {api} (started here")  # said first
            log = Path(os.environ["GRANARY_HOME"]) / "logs" / f"prefect-server-{port}.log"
            assert f"its log: {log}" in output.replace("\n", ""), output
            assert f"Check out the dashboard at http://127.0.0.1:{port}" in log.read_text()
            assert httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401  # closed
            assert f"UI: http://127.0.0.1:{port}" in output
            found = "found 00000000-0000-0000-0000-000000000000: the process running it died; container removed"
            assert found in output
            assert docker_runtime.client.containers.list(all=True, filters={"id": orphan.id}) == []
            deployment = api_get("/deployments/name/hello/hello", api).json()
            flow_run = api_post(
                f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"name": "served"}}, api
            ).json()
            deadline = time.monotonic() + 180
            while api_get(f"/flow_runs/{flow_run['id']}", api).json()["state"]["type"] != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.3)
            assert (tmp_path / "results" / "hello" / flow_run["id"] / "greeting.txt").read_text() == "Hello, served!\n"
            serve.send_signal(signal.SIGINT)
            assert serve.wait(timeout=30) == 0
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{api}/health", timeout=2)
        finally:
            if serve.poll() is None:
                serve.kill()
            if docker_runtime.client.containers.list(all=True, filters={"id": orphan.id}):
                orphan.remove(force=True)
    if asked is not None:
        assert asked == []  # the server on the default port was never asked anything


def test_serve_uses_a_server_already_on_its_port_and_says_so(prefect_server, tmp_path):
    port = int(prefect_server.split(":")[2].split("/")[0])
    task_copy("hello", tmp_path, "port-hello")
    with stand_in_on_the_default_port() as asked:
        serve = granary_serve("--port", str(port), "-d", str(tmp_path), unset=("PREFECT_API_URL",), COLUMNS="200")
        try:
            said = read_until(serve, "waiting for runs", timeout=180)
        finally:
            stop_process(serve)
    assert said.startswith(f"Prefect server: {prefect_server} (already running on this machine)")
    if asked is not None:
        assert asked == []


@pytest.mark.unit
def test_run_against_a_server_that_does_not_answer_says_so(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    result = cli.invoke(app, ["run", "hello", "-p", "name=x"])
    assert result.exit_code == 1 and "did not answer" in result.output


@pytest.mark.unit
def test_run_without_a_configured_server_says_how_to_get_one():
    # In a process of its own: unsetting PREFECT_API_URL here would send this session's runner to a throwaway server.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"GRANARY_LOCAL_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "granary_flows.cli", "run", "hello", "-p", "name=x"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no Prefect server: set PREFECT_API_URL, or start `granary serve`" in result.stderr


@pytest.mark.unit
def test_the_package_and_cli_import_without_prefect():
    # `granary check` stays fast, and Prefect's settings are fixed only once a flow or client is needed.
    code = "import sys, granary_flows, granary_flows.cli, granary_flows.server; print('prefect' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"
