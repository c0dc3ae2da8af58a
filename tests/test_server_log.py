"""Every Prefect server granary starts keeps its log in a file it names when it starts, rotated."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import granary_serve, read_until, stop_process

from granary_flows import server_log
from granary_flows.server import free_port, wait_healthy


def test_granary_server_start_names_its_log_and_writes_the_servers_output_there(tmp_path):
    port = free_port()
    server = granary_serve("start", "--port", str(port), command="server", GRANARY_HOME=str(tmp_path / "home"),
                           PREFECT_HOME=str(tmp_path / "prefect"))  # fmt: skip
    try:
        said = read_until(server, "Prefect's log:", timeout=60)
        log = tmp_path / "home" / "logs" / f"prefect-server-{port}.log"
        assert f"Prefect's log: {log}" in said
        wait_healthy(f"http://127.0.0.1:{port}/api", server, timeout=120)
        assert f"Check out the dashboard at http://127.0.0.1:{port}" in log.read_text()  # the server's own words
    finally:
        stop_process(server)
    assert server.returncode is not None  # the command was the server itself: SIGTERM stopped it


@pytest.mark.unit
def test_a_servers_log_is_rotated_so_that_it_cannot_fill_the_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(server_log, "ROTATE_BYTES", 10_000)
    monkeypatch.setattr(server_log, "KEPT", 2)
    talker = subprocess.Popen([sys.executable, "-c", "for i in range(5000): print('line', i, 'x' * 40)"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    log = tmp_path / "logs" / "prefect-server-1.log"
    server_log.follow(talker, log).join(timeout=30)
    kept = sorted(p.name for p in log.parent.iterdir())
    assert kept == ["prefect-server-1.log", "prefect-server-1.log.1", "prefect-server-1.log.2"]
    assert all(p.stat().st_size <= 10_100 for p in log.parent.iterdir())
    assert log.read_text().splitlines()[-1].startswith("line 4999 ")  # the newest lines are in the current file
