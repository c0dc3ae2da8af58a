"""granary on Prefect's own scale-out topology, on this machine (docs/production.md draws it): PostgreSQL, Redis as
the broker and cache (prefect-redis), API replicas started with `granary server start --no-services` behind HAProxy,
one `granary server services` process, and `granary worker`s of one work pool, which reach Prefect only through the
load balancer. For tests/test_topology.py and bench/worker.py --topology.

Each part is a process of its own that a test can kill and start again; everything is stopped on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from postgres import local_postgres
from rest import prefect_http

from granary_flows.server import free_port, is_healthy, wait_until

HAPROXY = """global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout tunnel 1h
    retries 3
    option redispatch
frontend prefect
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /api/health
    http-check expect status 200
    timeout check 3s
    default-server inter 1s fall 3 rise 2
{servers}
"""


def redis_environment(port: int) -> dict[str, str]:
    """Prefect's settings for Redis as its messaging broker, cache, event ordering, lease storage and Docket, as
    Prefect's guide to scaling a self-hosted server writes them."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(port),
        "PREFECT_REDIS_MESSAGING_DB": "0",
        "PREFECT_SERVER_DOCKET_URL": f"redis://127.0.0.1:{port}/1",
    }


@dataclass
class Topology:
    """The running parts. `api` is the load balancer's Prefect API; the replicas, the services and the workers are
    processes (`kill_*` ends one with SIGKILL, as a machine that dies; `start_*` starts it again)."""

    work: Path
    api: str
    server_environment: dict[str, str]
    worker_environment: dict[str, str]
    pool: str
    replica_ports: list[int]
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    services: subprocess.Popen[bytes] | None = None

    def start_replica(self, index: int) -> None:
        port = self.replica_ports[index]
        command = ["server", "start", "--no-services", "--port", str(port)]
        process = self._granary(command, self.server_environment, f"replica-{index}")
        wait_healthy = f"http://127.0.0.1:{port}/api"
        wait_until(lambda: is_healthy(wait_healthy), f"API replica {index}", process, timeout=120)
        if index < len(self.replicas):
            self.replicas[index] = process
        else:
            self.replicas.append(process)

    def kill_replica(self, index: int) -> None:
        _kill(self.replicas[index])

    def start_services(self) -> None:
        self.services = self._granary(["server", "services"], self.server_environment, "services")

    def start_worker(self, index: int, limit: int = 8) -> subprocess.Popen[bytes]:
        command = ["worker", "--pool", self.pool, "--limit", str(limit)]
        log = self.work / f"worker-{index}.log"
        before = log.stat().st_size if log.exists() else 0
        process = self._granary(command, self.worker_environment, f"worker-{index}")
        said = lambda: log.read_bytes()[before:].decode(errors="replace")  # noqa: E731
        wait_until(lambda: "waiting for runs" in said(), f"worker {index}", process, 120)
        while len(self.workers) <= index:
            self.workers.append(None)
        self.workers[index] = process
        return process

    def kill_worker(self, index: int) -> int:
        """SIGKILL the worker; returns its pid (the middle of its runner id, `host:pid:nonce`)."""
        process = self.workers[index]
        assert process is not None
        _kill(process)
        return process.pid

    def granary(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """A granary command against the load balancer (`granary deploy ...`), run to its end."""
        return subprocess.run(
            [sys.executable, "-m", "granary_flows.cli", *arguments],
            env=os.environ | self.worker_environment,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.work,
        )

    def _granary(self, command: list[str], environment: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        """`granary COMMAND` in a session of its own, its output added to WORK/NAME.log."""
        with open(self.work / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "granary_flows.cli", *command],
                env=os.environ | environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                start_new_session=True,
            )

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in [*self.replicas, self.services, *self.workers] if p is not None]


@contextmanager
def running_topology(
    work: Path, pool: str = "granary-topology", replicas: int = 2, worker_environment: dict[str, str] | None = None
) -> Iterator[Topology]:
    """Bring the topology up (without its workers: `start_worker`), and stop every part of it on exit."""
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        database = stack.enter_context(local_postgres(free_port()))
        redis_port = free_port()
        stack.enter_context(_process(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(work)], work / "redis.log"))  # fmt: skip
        wait_until(lambda: _answers(redis_port), "redis-server", timeout=30)
        server = {
            "PREFECT_HOME": str(work / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            **redis_environment(redis_port),
        }
        server.pop("PREFECT_API_URL", None)
        upgrade = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | server,
            capture_output=True,
            text=True,
            check=False,
        )
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        balancer, ports = free_port(), [free_port() for _ in range(replicas)]
        api = f"http://127.0.0.1:{balancer}/api"
        topology = Topology(
            work=work,
            api=api,
            server_environment=server | {"PREFECT_UI_API_URL": api, "PREFECT_API_URL": ""},
            worker_environment={"PREFECT_API_URL": api, "PREFECT_HOME": str(work / "workers")}
            | (worker_environment or {}),
            pool=pool,
            replica_ports=ports,
        )
        stack.callback(lambda: [_stop(process) for process in reversed(topology.processes())])
        for index in range(replicas):
            topology.start_replica(index)
        topology.start_services()
        servers = "\n".join(f"    server api{i} 127.0.0.1:{port} check" for i, port in enumerate(ports))
        config = work / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=balancer, servers=servers))
        stack.enter_context(_process(["haproxy", "-db", "-f", str(config)], work / "haproxy.log"))
        wait_until(lambda: is_healthy(api), "HAProxy in front of the API replicas", timeout=30)
        yield topology


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            _stop(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process and everything it started (its session): a machine that dies says nothing first."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        _kill(process)


def completed(api: str, flow_run_ids: list[str]) -> int:
    """How many of the runs are Completed (through the load balancer)."""
    body = {"flow_runs": {"id": {"any_": flow_run_ids}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    return int(prefect_http().post(f"{api}/flow_runs/count", json=body, timeout=60).json())


def wait_for(condition: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:g} s")
