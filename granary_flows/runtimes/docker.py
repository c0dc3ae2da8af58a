"""The local Docker runtime: a sandboxed container per attempt, found again by its labels.

The sandbox: no network (unless the task opts in, with a reason), all capabilities dropped, no new privileges, a
read-only root filesystem with a writable /tmp, and pids, memory and CPU limits. The container's inputs are staged
by the runner first and mounted read-only; its output folder is a host folder mounted writable, read afterwards
without following anything the container put there (`outputs.written_files`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from requests.exceptions import ChunkedEncodingError, ReadTimeout
from requests.exceptions import ConnectionError as RequestsConnectionError

from granary_flows.contract import ARGUMENTS_FILE, INPUT_DIR, INPUT_METADATA_FILE, MAX_LINE
from granary_flows.definition import RuntimeKind
from granary_flows.errors import ErrorCategory, ExecutionFailed, RuntimeUnavailable, StorageError
from granary_flows.layout import unsent_folder
from granary_flows.outputs import written_files
from granary_flows.policy import Policy
from granary_flows.runtimes.base import (
    LABEL_ATTEMPT,
    LABEL_EXECUTION,
    LABEL_FLOW_RUN,
    LABEL_RUNNER,
    LABEL_SERVER,
    LABEL_TASK,
    Attempt,
    AttemptOutcome,
    Collected,
    Orphan,
    Runtime,
    current_server,
    run_logger,
)
from granary_flows.store import ResultsStore

LOG_TAIL = 20
LOG_DRAIN = 60  # seconds the log stream may take to deliver its last lines once the container has ended
UNIX_SOCKET_URL = "http+docker://localhost"  # the docker SDK's base URL for an engine on a unix socket
PIDS_LIMIT = 512
TMP_SIZE = "256m"
LISTED_KEPT = 64  # listings `resuming` keeps for `prepare`: well past the executions one runner runs at once


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
    if client.api.base_url == UNIX_SOCKET_URL:
        # No proxy or .netrc entry applies to a local socket, and looking them up took a twentieth of the runner's
        # CPU. A TCP engine keeps them: a proxy in the environment may be the way to it.
        client.api.trust_env = False
    return client


class DockerRuntime(Runtime):
    """Runs attempts as sandboxed containers on a Docker engine.

    Args:
        client: a docker SDK client; `docker_client()` when not given.

    Example:
        >>> runtime = DockerRuntime()  # doctest: +SKIP
        >>> runtime.run(attempt, on_line=print)  # doctest: +SKIP
    """

    kind = RuntimeKind.DOCKER
    stages_inputs = True

    def __init__(self, client: docker.DockerClient | None = None):
        self._client = client
        self._listed: dict[str, list[Any]] = {}  # an execution -> its containers, listed by `resuming` for `prepare`

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def prepare(self, attempt: Attempt, store: ResultsStore) -> Attempt:
        output_dir = attempt.work_dir / f"attempt-{attempt.number}" / "outputs"
        existing = self._existing(attempt, self._listed.pop(attempt.execution_id, None))
        if existing is None:  # a fresh start: nothing an earlier process left counts
            shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        return attempt.model_copy(
            update={"output_dir": output_dir, "left_container": existing.id if existing else None}
        )

    def run(self, attempt: Attempt, on_line: Callable[[str], None]) -> AttemptOutcome:
        spec = attempt.task.runtime.docker
        if spec is None or attempt.output_dir is None:
            raise RuntimeUnavailable("DockerRuntime runs Docker tasks, prepared (DockerRuntime.prepare) first")
        say_since: int | None = None
        container = self._found(attempt.left_container) if attempt.left_container else None
        if container is not None and container.status == "created":  # its runner died before starting it
            run_logger().info("starting container %s, created before this process", container.name)
        elif container is not None:
            run_logger().info("re-attaching to container %s, started before this process", container.name)
            say_since = int(time.time())
        else:
            container = self._create(attempt)
        tail: deque[str] = deque(maxlen=LOG_TAIL)
        kept = False
        try:
            if say_since is None:
                self._start(container, attempt.invocation.stdin)
            streamer = threading.Thread(
                target=self._stream_logs, args=(container, on_line, tail, say_since), daemon=True
            )
            streamer.start()
            exit_code, killed_reason = self._wait(container, attempt.task.timeout, attempt)
            streamer.join(timeout=LOG_DRAIN)
            if streamer.is_alive():  # never silently: the run's logs say they may be short
                run_logger().warning(
                    "the container's log stream did not end within %d s of the container: its last lines may be "
                    "missing here (the failure summary keeps the last %d)",
                    LOG_DRAIN,
                    LOG_TAIL,
                )
            if exit_code != 0:  # only a failed container may have been killed for its memory
                with contextlib.suppress(NotFound):
                    _once_more_if_broken(container.reload)
                    if container.attrs["State"].get("OOMKilled"):
                        killed_reason = f"killed: out of memory (limit {attempt.task.resources.memory} MiB)"
            outcome = AttemptOutcome(
                exit_code=exit_code,
                killed_reason=killed_reason,
                last_stdout_line=self._last_stdout_line(container),
                log_tail=list(tail),
            )
            # A container that ended by itself is kept until its outcome is stored (`release`): a runner that dies
            # meanwhile is followed by one that re-attaches to it and stores it, rather than running it again.
            kept = exit_code is not None and killed_reason is None
            attempt.container_id = container.id if kept else None
            return outcome
        finally:
            if not kept:
                self._remove(container)

    def release(self, attempt: Attempt) -> None:
        if attempt.container_id:
            self._remove(self.client.containers.prepare_model({"Id": attempt.container_id}))
            attempt.container_id = None

    def collect(self, attempt: Attempt, store: ResultsStore, policy: Policy) -> Collected:
        assert attempt.output_dir is not None
        written = written_files(attempt.output_dir, policy)
        task, execution_id = attempt.task.name, attempt.execution_id
        try:
            stored = _interruptible(
                lambda: store.put_outputs(written.files, task, execution_id),
                attempt,
                cleanup=lambda: store.clear_outputs(task, execution_id),
            )
        except StorageError as err:
            kept = unsent_folder(task, execution_id)
            shutil.rmtree(kept, ignore_errors=True)
            for file in written.files:
                (kept / file.relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file.path, kept / file.relative)
            raise ExecutionFailed(f"{err}; the outputs are kept in {kept}", ErrorCategory.SYSTEM) from err
        return Collected(stored=stored, warnings=written.warnings)

    def resuming(self, execution_id: str) -> int | None:
        listed = self._labelled(f"{LABEL_EXECUTION}={execution_id}")
        self._listed[execution_id] = listed  # `prepare`, which comes next, looks at the same list
        if len(self._listed) > LISTED_KEPT:  # an execution that failed before `prepare` never takes its list
            del self._listed[next(iter(self._listed))]
        for container in listed:
            labels = container.attrs.get("Labels") or {}
            if labels.get(LABEL_SERVER) == current_server() and labels.get(LABEL_ATTEMPT, "").isdigit():
                return int(labels[LABEL_ATTEMPT])
        return None

    def stop(self, flow_run_id: str, *, started_elsewhere: bool = True) -> int:
        containers = self._labelled(f"{LABEL_FLOW_RUN}={flow_run_id}")
        for container in containers:
            self._remove(container)
        return len(containers)

    def orphans(self, is_dead: Callable[[str], bool], is_final: Callable[[str], bool]) -> list[Orphan]:
        """Containers of runners that died: one whose run still waits for it is left to run on, and the run is run
        again to re-attach; the others are removed, since nobody will collect what they write."""
        found = []
        for container in self._labelled(f"{LABEL_SERVER}={current_server()}"):
            labels = container.attrs["Labels"]
            if not is_dead(labels.get(LABEL_RUNNER, "")):
                continue
            flow_run_id = labels.get(LABEL_FLOW_RUN, labels[LABEL_EXECUTION])
            if not is_final(flow_run_id) and self._outputs_kept(container):
                state = container.attrs.get("State", "")
                what = f"the process running it died; its container {container.id[:12]} is {state}"
                found.append(Orphan(execution_id=flow_run_id, what=what, resumable=True))
                continue
            self._remove(container)
            found.append(Orphan(execution_id=flow_run_id, what="the process running it died; container removed"))
        return found

    def _existing(self, attempt: Attempt, listed: list[Any] | None) -> Any:
        """The container of this very attempt that a runner which died left behind, if any (from `listed`, the
        execution's containers as `resuming` just listed them, else listed now)."""
        if listed is None:
            listed = self._labelled(f"{LABEL_EXECUTION}={attempt.execution_id}")
        for container in listed:
            labels = container.attrs.get("Labels") or {}
            if labels.get(LABEL_ATTEMPT) == str(attempt.number) and labels.get(LABEL_SERVER) == current_server():
                found = self._found(container.id)
                if found is not None:  # else removed since the listing: another may match
                    return found
        return None

    def _found(self, container_id: str) -> Any:
        """The container, inspected now; None once it was removed."""
        try:
            return self.client.containers.get(container_id)
        except NotFound:
            return None

    def _outputs_kept(self, container: Any) -> bool:
        """Whether the output folder the container writes to is still on this host, to collect from."""
        found = self._found(container.id)
        mounts = (found.attrs.get("Mounts") or []) if found is not None else []
        return any(m.get("Destination") and Path(m.get("Source", "")).is_dir() and m.get("RW") for m in mounts)

    def image_digest(self, spec: Any) -> str:
        """The id of the image a task's reference names on this engine, checked against the pinned one.

        Raises:
            RuntimeUnavailable: the image is missing, or is not the one pinned at registration.
        """
        try:
            found = str(self.client.images.get(spec.image).id)
        except ImageNotFound as err:
            raise RuntimeUnavailable(
                f"image {spec.image!r} is not on this Docker engine: build or pull it first"
            ) from err
        except APIError as err:
            raise RuntimeUnavailable(f"Docker could not read image {spec.image!r}: {err.explanation or err}") from err
        if spec.digest and found != spec.digest:
            raise RuntimeUnavailable(
                f"image {spec.image!r} changed since the task was registered (pinned {spec.digest}, now {found}): "
                "nothing was run; register the task again to accept the new image"
            )
        return found

    def _create(self, attempt: Attempt) -> Any:
        spec = attempt.task.runtime.docker
        assert spec is not None
        if spec.digest:  # pinned: checked before anything is created
            attempt.image_digest = self.image_digest(spec)
        try:
            container = self.client.containers.create(**self._container_options(attempt))
        except ImageNotFound as err:
            raise RuntimeUnavailable(
                f"image {spec.image!r} is not on this Docker engine: build or pull it first"
            ) from err
        except APIError as err:
            raise RuntimeUnavailable(f"Docker refused to create the container: {err.explanation or err}") from err
        attempt.image_digest = container.attrs.get("Image") or attempt.image_digest  # the image it runs, by id
        return container

    def _start(self, container: Any, stdin: str | None) -> None:
        if stdin is None:
            container.start()
            return
        # Attached before it starts, so that not a byte is lost; closing our end ends its standard input.
        attached = container.attach_socket(params={"stdin": 1, "stream": 1})
        raw = getattr(attached, "_sock", attached)
        try:
            container.start()
            raw.sendall(stdin.encode())
        finally:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)
            attached.close()

    def _labelled(self, label: str) -> list[Any]:
        """Containers with `label`, from the list call alone: the SDK's full listing inspects each one afterwards,
        and fails on any that another run removed in between."""
        return list(self.client.containers.list(all=True, sparse=True, filters={"label": label}))

    def _container_options(self, attempt: Attempt) -> dict[str, Any]:
        task = attempt.task
        spec = task.runtime.docker
        invocation = attempt.invocation
        assert spec is not None and attempt.output_dir is not None
        volumes = {str(attempt.output_dir): {"bind": invocation.output_path, "mode": "rw"}}
        if invocation.arguments_file is not None:
            volumes[str(self._file(attempt, "arguments.json", invocation.arguments_file))] = {
                "bind": ARGUMENTS_FILE,
                "mode": "ro",
            }
        if invocation.input_metadata is not None:
            volumes[str(self._file(attempt, "input-metadata.json", invocation.input_metadata))] = {
                "bind": INPUT_METADATA_FILE,
                "mode": "ro",
            }
        if attempt.input_dir is not None:
            volumes[str(attempt.input_dir)] = {"bind": INPUT_DIR, "mode": "ro"}
        volumes |= invocation.volumes
        options: dict[str, Any] = {
            "image": attempt.image_digest or spec.image,  # the very image checked, even if the tag moves meanwhile
            "environment": invocation.environment,
            "labels": {
                LABEL_EXECUTION: attempt.execution_id,
                LABEL_FLOW_RUN: attempt.flow_run_id,
                LABEL_TASK: task.name,
                LABEL_RUNNER: attempt.runner_id,
                LABEL_ATTEMPT: str(attempt.number),
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
            "name": f"granary-{task.name[:40]}-{attempt.execution_id[:8]}-{attempt.number}-{os.urandom(2).hex()}",
        }
        if invocation.command is not None:
            options["command"] = invocation.command
        if invocation.entrypoint is not None:
            options["entrypoint"] = invocation.entrypoint
        if invocation.stdin is not None:
            options |= {"stdin_open": True, "detach": False}  # detach=False is what makes Docker close it once read
        if task.resources.sharedMemory:
            options["shm_size"] = f"{task.resources.sharedMemory}m"
        if task.resources.gpus:
            options["device_requests"] = [docker.types.DeviceRequest(count=task.resources.gpus, capabilities=[["gpu"]])]
        return options

    @staticmethod
    def _file(attempt: Attempt, name: str, content: str) -> Path:
        assert attempt.output_dir is not None
        path = attempt.output_dir.parent / name
        path.write_text(content)
        return path

    def _wait(self, container: Any, timeout: float | None, attempt: Attempt) -> tuple[int | None, str | None]:
        # Cancellation removes the container, which ends the wait at once.
        forget = attempt.cancel.on_cancel(lambda: self._remove(container))
        began = time.monotonic()
        try:
            status = container.wait(timeout=timeout) if timeout else container.wait()
            return status.get("StatusCode"), None
        except (ReadTimeout, RequestsConnectionError, ChunkedEncodingError) as err:
            self._kill(container)
            # The SDK says a read timeout as either; a connection that broke before the task's time is not one.
            if timeout and time.monotonic() - began >= timeout - 1:
                return None, f"killed: timed out after {timeout:g} s"
            return None, f"the connection to the Docker engine broke while the container ran ({type(err).__name__})"
        except NotFound:
            return None, "killed: the container was removed (cancelled)"
        finally:
            forget()

    @staticmethod
    def _stream_logs(
        container: Any, on_line: Callable[[str], None], tail: deque[str], since: int | None = None
    ) -> None:
        """Each line once, in order, as the container writes it. A line longer than MAX_LINE is cut, and a flood
        without newlines costs time linear in its size."""
        pending = bytearray()
        skipping = False  # the rest of a line that was cut

        def emit(raw: bytes | bytearray, cut: bool = False) -> None:
            line = bytes(raw).decode(errors="replace").rstrip("\r")
            if cut:
                line += f" [... line cut at {MAX_LINE // 1024} KiB]"
            tail.append(line)
            on_line(line)

        options: dict[str, Any] = {"stream": True, "follow": True}
        if since is not None:
            options["since"] = since
        try:
            for chunk in container.logs(**options):
                start = 0
                while True:
                    newline = chunk.find(b"\n", start)
                    piece = chunk[start:] if newline < 0 else chunk[start:newline]
                    if not skipping:
                        room = MAX_LINE - len(pending)
                        pending += piece[:room]
                        if len(piece) > room:
                            emit(pending, cut=True)
                            pending.clear()
                            skipping = True
                    if newline < 0:
                        break
                    if not skipping:
                        emit(pending)
                    pending.clear()
                    skipping = False
                    start = newline + 1
        except (NotFound, APIError, RequestsConnectionError, ChunkedEncodingError):
            pass
        if pending and not skipping:
            emit(pending)

    @staticmethod
    def _last_stdout_line(container: Any) -> str | None:
        try:
            output = container.logs(stdout=True, stderr=False, tail=3).decode(errors="replace").strip()
        except (NotFound, APIError):
            return None
        return output.splitlines()[-1][:MAX_LINE] if output else None

    @staticmethod
    def _kill(container: Any) -> None:
        with contextlib.suppress(NotFound, APIError):
            _once_more_if_broken(container.kill)

    @staticmethod
    def _remove(container: Any) -> None:
        try:
            _once_more_if_broken(lambda: container.remove(force=True))
        except NotFound:
            pass
        except APIError as err:
            if err.status_code != 409:  # removal already in progress
                raise


def _once_more_if_broken(call: Callable[[], Any]) -> Any:
    """`call`, tried again once if the engine's connection breaks: when one connection broke (an engine restart, a
    dropped network), the first call after it may take a pooled connection that broke with it."""
    try:
        return call()
    except (RequestsConnectionError, ChunkedEncodingError):
        return call()


def _interruptible(call: Callable[[], Any], attempt: Attempt, cleanup: Callable[[], None]) -> Any:
    """Run `call` (an upload) in a thread of its own, and stop waiting for it at once on cancellation; an upload
    that goes on afterwards removes what it stored when it ends."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err
        finally:
            done.set()
            if attempt.cancel.cancelled and "value" in outcome:
                with contextlib.suppress(Exception):
                    cleanup()

    threading.Thread(target=work, daemon=True, name=f"granary-upload-{attempt.execution_id[:8]}").start()
    forget = attempt.cancel.on_cancel(done.set)
    try:
        done.wait()
    finally:
        forget()
    attempt.cancel.check(f"storing the outputs of execution {attempt.execution_id}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
