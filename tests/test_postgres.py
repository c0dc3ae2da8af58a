"""The Prefect server on PostgreSQL (SQLite locks under load), with granary's in-process worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from helpers import ROOT, granary_serve, read_until, stop_process, task_copy
from postgres import local_postgres, query
from rest import prefect_auth

from granary_flows.server import free_port, local_server

prefect_api = httpx.Client(auth=prefect_auth())  # the servers these tests start require the session's credential


@pytest.fixture(scope="module")
def postgres_url():
    with local_postgres(free_port()) as url:
        yield url


def test_a_prefect_server_on_postgresql_runs_a_burst_of_executions_through_granary_worker(postgres_url, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    database = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres_url, "PREFECT_HOME": str(tmp_path / "prefect")}
    task_copy("hello", tmp_path / "tasks", "pg-hello")
    worker = None
    with local_server(port=port, extra_env=database, log_file=tmp_path / "server.log"):
        try:
            client_env = {"PREFECT_API_URL": api}
            deploy = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "granary_flows.cli",
                    "deploy",
                    "--pool",
                    "pg-pool",
                    "-d",
                    str(tmp_path / "tasks"),
                ],
                check=False,
                cwd=ROOT,
                capture_output=True,
                text=True,
                env=os.environ | client_env,
                timeout=120,
            )
            assert deploy.returncode == 0, deploy.stdout + deploy.stderr
            worker = granary_serve(
                "--pool",
                "pg-pool",
                "--limit",
                "8",
                command="worker",
                GRANARY_RESULTS_URI=str(tmp_path / "results"),
                **client_env,
            )
            read_until(worker, "waiting for runs", timeout=180)
            deployment = prefect_api.get(f"{api}/deployments/name/pg-hello/pg-hello").json()
            runs = [
                prefect_api.post(
                    f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"name": f"pg {i}"}}
                ).json()
                for i in range(30)
            ]
            deadline = time.monotonic() + 180
            for flow_run in runs:
                while prefect_api.get(f"{api}/flow_runs/{flow_run['id']}").json()["state"]["type"] != "COMPLETED":
                    assert time.monotonic() < deadline, "not every execution completed"
                    time.sleep(0.5)
            for i, flow_run in enumerate(runs):
                greeting = tmp_path / "results" / "pg-hello" / flow_run["id"] / "greeting.txt"
                assert greeting.read_text() == f"Hello, pg {i}!\n"
            # The runs, their states and logs live in PostgreSQL, not in a SQLite file under PREFECT_HOME.
            completed = (
                f"select count(*) from flow_run where deployment_id = '{deployment['id']}' and state_type = 'COMPLETED'"
            )
            assert query(postgres_url, completed) == "30"
            assert not list((tmp_path / "prefect").glob("*.db"))
        finally:
            stop_process(worker)
