"""The local Docker runtime: a sandboxed container per attempt, found again by its labels."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from granary_flows.contract import ARGUMENTS_FILE, INPUT_DIR, OUTPUT_DIR
from granary_flows.errors import RuntimeUnavailable
from granary_flows.runtimes.base import (
    LABEL_EXECUTION,
    LABEL_FLOW_RUN,
    LABEL_RUNNER,
    LABEL_SERVER,
    LABEL_TASK,
    Attempt,
    AttemptOutcome,
    Orphan,
    Runtime,
    current_server,
)

LOG_TAIL = 20
PIDS_LIMIT = 512
TMP_SIZE = "256m"


def docker_client(max_pool_size: int = 32, host_block: str | None = None) -> docker.DockerClient:
    """A client for the Docker engine.

    Args:
        max_pool_size: connections kept; at least the number of executions run at once.
        host_block: the name of a prefect-docker `DockerHost` block; default `$GRANARY_DOCKER_HOST_BLOCK`, and
            without one, the engine `DOCKER_HOST` names (the local socket by default).

    Raises:
        RuntimeUnavailable: when no engine answers, or the block does not exist.
    """
    host_block = host_block or os.environ.get("GRANARY_DOCKER_HOST_BLOCK")
    where = f"DockerHost block {host_block!r}" if host_block else os.environ.get("DOCKER_HOST", "the local socket")
    try:
        if host_block:
            from prefect_docker.host import DockerHost

            host = DockerHost.load(host_block)
            client = host.model_copy(update={"max_pool_size": max(host.max_pool_size or 0, max_pool_size)}).get_client()
        else:
            client = docker.from_env(max_pool_size=max_pool_size)
        client.ping()
    except (DockerException, ValueError) as err:
        raise RuntimeUnavailable(f"no Docker engine answers at {where}: {err}") from err
    return client


class DockerRuntime(Runtime):
    """Runs attempts as containers on a Docker engine.

    Args:
        client: a docker SDK client; `docker_client()` when not given.

    Example:
        >>> runtime = DockerRuntime()  # doctest: +SKIP
        >>> runtime.run(attempt, on_line=print)  # doctest: +SKIP
    """

    def __init__(self, client: docker.DockerClient | None = None):
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def run(self, attempt: Attempt, on_line: Callable[[str], None]) -> AttemptOutcome:
        spec = attempt.task.runtime.docker
        assert spec is not None and attempt.output_dir is not None, "DockerRuntime runs docker tasks only"
        arguments_file = attempt.output_dir.parent / "arguments.json"
        arguments_file.write_text(attempt.environment["GRANARY_ARGUMENTS"])
        try:
            container = self.client.containers.create(**self._container_options(attempt, arguments_file))
        except ImageNotFound as err:
            raise RuntimeUnavailable(
                f"image {spec.image!r} is not on this Docker engine: build or pull it first"
            ) from err
        except APIError as err:
            raise RuntimeUnavailable(f"Docker refused to create the container: {err.explanation or err}") from err
        tail: deque[str] = deque(maxlen=LOG_TAIL)
        try:
            container.start()
            streamer = threading.Thread(target=self._stream_logs, args=(container, on_line, tail), daemon=True)
            streamer.start()
            exit_code, killed_reason = self._wait(container, attempt.task.timeout)
            streamer.join(timeout=10)
            container.reload()
            if container.attrs["State"].get("OOMKilled"):
                killed_reason = f"killed: out of memory (limit {attempt.task.resources.memory} MiB)"
            return AttemptOutcome(
                exit_code=exit_code,
                killed_reason=killed_reason,
                last_stdout_line=self._last_stdout_line(container),
                log_tail=list(tail),
            )
        finally:
            self._remove(container)

    def stop(self, execution_id: str) -> int:
        containers = self._labelled(f"{LABEL_FLOW_RUN}={execution_id}")
        for container in containers:
            self._remove(container)
        return len(containers)

    def orphans(self, is_dead: Callable[[str], bool]) -> list[Orphan]:
        """Remove the containers of runners that died: nothing is waiting to collect what they write."""
        found = []
        for container in self._labelled(f"{LABEL_SERVER}={current_server()}"):
            labels = container.attrs["Labels"]
            if is_dead(labels.get(LABEL_RUNNER, "")):
                self._remove(container)
                found.append(
                    Orphan(
                        execution_id=labels.get(LABEL_FLOW_RUN, labels[LABEL_EXECUTION]),
                        what="the process running it died; container removed",
                    )
                )
        return found

    def _labelled(self, label: str) -> list[Any]:
        """Containers with `label`, from the list call alone: the SDK's full listing inspects each one afterwards,
        and fails on any that another run removed in between."""
        return list(self.client.containers.list(all=True, sparse=True, filters={"label": label}))

    def _container_options(self, attempt: Attempt, arguments_file: Any) -> dict[str, Any]:
        task = attempt.task
        spec = task.runtime.docker
        assert spec is not None
        assert attempt.output_dir is not None
        volumes = {
            str(attempt.output_dir): {"bind": OUTPUT_DIR, "mode": "rw"},
            str(arguments_file): {"bind": ARGUMENTS_FILE, "mode": "ro"},
        }
        if attempt.input_dir is not None:
            volumes[str(attempt.input_dir)] = {"bind": INPUT_DIR, "mode": "ro"}
        volumes |= attempt.volumes
        options: dict[str, Any] = {
            "image": spec.image,
            "environment": spec.environment | attempt.environment,
            "labels": {
                LABEL_EXECUTION: attempt.execution_id,
                LABEL_FLOW_RUN: attempt.owner,
                LABEL_TASK: task.name,
                LABEL_RUNNER: attempt.runner_id,
                LABEL_SERVER: current_server(),
            },
            "volumes": volumes,
            "network_mode": "bridge" if spec.network else "none",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,size={TMP_SIZE}"},
            "pids_limit": PIDS_LIMIT,
            "mem_limit": f"{task.resources.memory}m",
            "memswap_limit": f"{task.resources.memory}m",
            "nano_cpus": int(task.resources.cpus * 1e9),
            "name": f"granary-{task.name}-{attempt.execution_id[:8]}-{attempt.attempt}",
        }
        if attempt.command or spec.command:
            options["command"] = attempt.command or spec.command
        if task.resources.sharedMemory:
            options["shm_size"] = f"{task.resources.sharedMemory}m"
        if task.resources.gpus:
            options["device_requests"] = [docker.types.DeviceRequest(count=task.resources.gpus, capabilities=[["gpu"]])]
        return options

    def _wait(self, container: Any, timeout: float | None) -> tuple[int | None, str | None]:
        try:
            status = container.wait(timeout=timeout) if timeout else container.wait()
            return status.get("StatusCode"), None
        except (ReadTimeout, RequestsConnectionError):
            self._kill(container)
            return None, f"killed: timed out after {timeout:g} s"
        except NotFound:
            return None, "killed: the container was removed (cancelled)"

    @staticmethod
    def _stream_logs(container: Any, on_line: Callable[[str], None], tail: deque[str]) -> None:
        pending = b""
        try:
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip("\r")
                    tail.append(line)
                    on_line(line)
        except (NotFound, APIError, RequestsConnectionError):
            pass
        if pending:
            line = pending.decode(errors="replace")
            tail.append(line)
            on_line(line)

    @staticmethod
    def _last_stdout_line(container: Any) -> str | None:
        try:
            output = container.logs(stdout=True, stderr=False, tail=3).decode(errors="replace").strip()
        except (NotFound, APIError):
            return None
        return output.splitlines()[-1] if output else None

    @staticmethod
    def _kill(container: Any) -> None:
        with contextlib.suppress(NotFound, APIError):
            container.kill()

    @staticmethod
    def _remove(container: Any) -> None:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as err:
            if err.status_code != 409:  # removal already in progress
                raise
