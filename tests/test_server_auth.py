"""The Prefect servers granary starts are closed by default: they require a credential generated once per Prefect home,
which every granary command on the machine finds by itself; a server without one listens on loopback alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, granary_serve, stop_process

from granary_flows.errors import GranaryError
from granary_flows.server import free_port, wait_healthy
from granary_flows.server_auth import check_listening, credential_file, server_credential, use_for_client

CREDENTIALS = ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING")
SESSION_SERVER = (*CREDENTIALS, "PREFECT_API_URL")  # a command here knows nothing of the session's server


def granary(*arguments: str, home: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """A granary command as a user on this machine types it: no credential in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in SESSION_SERVER} | {"PREFECT_HOME": str(home)} | environment
    return subprocess.run([sys.executable, "-m", "granary_flows.cli", *arguments], cwd=ROOT, env=env, text=True,
                          capture_output=True, check=False, timeout=300)  # fmt: skip


def test_granary_server_start_requires_a_credential_that_every_granary_command_finds(tmp_path):
    """The quickstart's server: an anonymous caller on the host gets 401 for every probe that read keys, ran tasks,
    posed as users and read arguments before; `granary server credentials` prints the credential, kept readable by
    its owner only; `granary register` and `granary tasks list` need nobody to type it."""
    home, port = tmp_path / "prefect", free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = granary_serve("start", "--port", str(port), command="server", unset=CREDENTIALS, PREFECT_HOME=str(home))
    try:
        wait_healthy(api, server, timeout=120)
        kept = credential_file({"PREFECT_HOME": str(home)})
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        credential = kept.read_text().strip()
        assert credential.startswith("granary:") and len(credential) > 40

        anonymous = httpx.Client(base_url=api, timeout=30)
        probes = [
            ("POST", "/block_documents/filter", {"include_secrets": True}),  # the keys that sign links
            ("POST", "/deployments/filter", {}),
            ("POST", "/flow_runs/filter", {}),  # every user's arguments
            ("POST", "/artifacts/filter", {}),  # every signed link
            ("POST", "/logs/filter", {}),
            ("POST", "/variables/filter", {}),
            ("PATCH", "/block_documents/00000000-0000-0000-0000-000000000000", {"data": {}}),
            ("POST", "/deployments/00000000-0000-0000-0000-000000000000/create_flow_run",
             {"tags": ["submitted-by:alice"]}),
        ]  # fmt: skip
        for method, path, body in probes:
            assert anonymous.request(method, path, json=body).status_code == 401, path
        assert anonymous.post("/flow_runs/filter", json={}, auth=("granary", "a guess")).status_code == 401
        assert anonymous.get("/health").status_code == 200  # what load balancers probe
        assert httpx.get(f"http://127.0.0.1:{port}/ui-settings").json()["auth"] == "BASIC"  # the UI asks for it

        printed = granary("server", "credentials", home=home)
        assert printed.returncode == 0 and printed.stdout.strip() == credential
        exported = granary("server", "credentials", "--shell", home=home, GRANARY_LOCAL_PORT=str(port))
        assert exported.stdout.splitlines() == [f"export PREFECT_API_URL={api}",
                                                f"export PREFECT_API_AUTH_STRING={credential}"]  # fmt: skip

        registered = granary("register", "deployments/hello.yaml", home=home, PREFECT_API_URL=api)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        listed = granary("tasks", "list", home=home, GRANARY_LOCAL_PORT=str(port), COLUMNS="200")
        assert listed.returncode == 0 and "hello" in listed.stdout, listed.stdout + listed.stderr
        wrong = granary("tasks", "list", home=home, PREFECT_API_URL=api, PREFECT_API_AUTH_STRING="granary:wrong")
        assert wrong.returncode == 1 and "401" in wrong.stderr and "granary server credentials" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    finally:
        stop_process(server)


def test_a_server_without_credentials_is_refused_beyond_loopback_and_open_only_when_asked_for(tmp_path):
    home = tmp_path / "prefect"
    refused = granary("server", "start", "--host", "0.0.0.0", "--port", str(free_port()), home=home,
                      GRANARY_SERVER_AUTH="off")  # fmt: skip
    assert refused.returncode == 1
    assert "refusing to serve Prefect's API on 0.0.0.0 without credentials" in refused.stderr
    assert not credential_file({"PREFECT_HOME": str(home)}).exists()

    port = free_port()
    server = granary_serve("start", "--port", str(port), command="server", unset=CREDENTIALS,
                           PREFECT_HOME=str(home), GRANARY_SERVER_AUTH="off")  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api", server, timeout=120)
        assert httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}).status_code == 200
    finally:
        stop_process(server)


@pytest.mark.unit
def test_the_credential_is_made_once_kept_private_and_an_operators_own_wins(tmp_path):
    env = {"PREFECT_HOME": str(tmp_path)}
    made = server_credential(env)
    assert made == server_credential(env) == credential_file(env).read_text().strip()
    assert server_credential(env | {"PREFECT_SERVER_API_AUTH_STRING": "ops:theirs"}) == "ops:theirs"
    assert server_credential(env | {"GRANARY_SERVER_AUTH": "off"}) is None
    credential_file(env).chmod(0o644)
    with pytest.raises(GranaryError, match="can be read by others"):
        server_credential(env)


@pytest.mark.unit
def test_a_client_is_given_the_local_credential_only_for_a_server_on_this_machine(tmp_path):
    credential = server_credential({"PREFECT_HOME": str(tmp_path)})
    for url, expected in [("http://127.0.0.1:4200/api", credential), ("http://localhost:4200/api", credential),
                          (None, credential), ("https://prefect.example.org/api", None)]:  # fmt: skip
        env = {"PREFECT_HOME": str(tmp_path)}
        use_for_client(url, env)
        assert env.get("PREFECT_API_AUTH_STRING") == expected, url
    theirs = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_AUTH_STRING": "ops:theirs"}
    use_for_client("http://127.0.0.1:4200/api", theirs)
    assert theirs["PREFECT_API_AUTH_STRING"] == "ops:theirs"
    check_listening("127.0.0.1", None)
    check_listening("0.0.0.0", "granary:secret")
    with pytest.raises(GranaryError):
        check_listening("::", None)
