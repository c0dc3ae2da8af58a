"""Input staging: on local Docker the container has no network, so `format: uri` arguments are fetched first, by the
runner, under the operator's policy (`policy.Policy`): only from allowed folders, public addresses and allowed
buckets, each input and all of them within their size caps, and stopped at once when the run is cancelled.
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from pydantic import BaseModel

from granary_flows.cancellation import CancelToken
from granary_flows.contract import INPUT_DIR, SIDECAR_SUFFIX
from granary_flows.errors import StagingError
from granary_flows.masking import without_credentials
from granary_flows.outbound import OutboundRefused, pinned_request
from granary_flows.policy import Policy

STAGED_SCHEMES = ("file", "s3", "http", "https")
CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
SIDECAR_CAP = 4 * 1024 * 1024  # an input's side-car is metadata, not data
TIMEOUT = httpx.Timeout(connect=10, read=30, write=30, pool=10)


logger = logging.getLogger("granary.staging")


class Readable(Protocol):
    """What an input is copied from: a file, an S3 object's body, an HTTP response's bytes."""

    def read(self, size: int = -1, /) -> bytes: ...


class StagedInput(BaseModel):
    """One input file as fetched: what the container sees, and what the execution records of it."""

    argument: str
    uri: str  # as given; the execution records this
    path: str  # where the container sees it
    local: str  # where it lies on the runner's host
    size: int
    media_type: str | None = None
    sidecar: dict[str, Any] | None = None  # the GeoJSON Feature at `<uri>.metadata.json`, when there is one


def uri_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, str | list[str]]:
    """The top-level arguments declared `format: uri` (or arrays of them) whose values the runtime can fetch."""
    return {
        name: value for name, value in arguments.items() if _stageable(schema.get("properties", {}).get(name), value)
    }


def _stageable(spec: Any, value: Any) -> bool:
    if declares_uri(spec):
        return isinstance(value, str) and _fetchable(value)
    if isinstance(spec, dict) and spec.get("type") == "array" and declares_uri(spec.get("items")):
        return isinstance(value, list) and bool(value) and all(isinstance(v, str) and _fetchable(v) for v in value)
    return False


def stage_inputs(
    uris: dict[str, str | list[str]],
    folder: Path,
    policy: Policy,
    cancel: CancelToken | None = None,
    storage_options: dict[str, Any] | None = None,
    sidecars: bool = False,
) -> list[StagedInput]:
    """Fetch each URI into `folder/<argument>/<file name>`, within the policy.

    Args:
        uris: argument name -> URI (or list of URIs), as `uri_arguments` returns.
        folder: a local folder, later mounted read-only at `/granary/inputs`.
        policy: what may be read, from where, and how much.
        cancel: stops the fetch at once when cancelled.
        storage_options: for `s3://` inputs (credentials, endpoint).
        sidecars: also read each input's `<uri>.metadata.json`, where there is one.

    Returns:
        One `StagedInput` per file; a list's files share the folder `/granary/inputs/<argument>/`.

    Raises:
        StagingError: naming the argument, the URI (without credentials) and the rule or failure; nothing has started.
        ExecutionCancelled: when cancelled meanwhile.
    """
    cancel = cancel or CancelToken()
    budget = _Budget(policy.max_inputs_bytes)
    staged = []
    for name, value in uris.items():
        listed = [value] if isinstance(value, str) else value
        # Files of one list with the same name (each tile's ndvi.tif) each get a folder of their own.
        clash = len({_file_name(uri, name) for uri in listed}) < len(listed)
        for index, uri in enumerate(listed):
            file_name = (f"{index}/" if clash else "") + _file_name(uri, name)
            target = folder / name / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            fetcher = _Fetcher(name, uri, policy, cancel, budget, storage_options or {})
            size = fetcher.fetch_to(target, policy.max_input_bytes)
            sidecar = fetcher.sidecar() if sidecars else None
            staged.append(
                StagedInput(
                    argument=name,
                    uri=uri,
                    path=f"{INPUT_DIR}/{name}/{file_name}",
                    local=str(target),
                    size=size,
                    media_type=mimetypes.guess_type(file_name)[0],
                    sidecar=sidecar,
                )
            )
    return staged


def container_arguments(arguments: dict[str, Any], staged: list[StagedInput]) -> dict[str, Any]:
    """The arguments with each staged URI replaced by the path the container sees (a list stays a list)."""
    paths: dict[str, list[str]] = {}
    for item in staged:
        paths.setdefault(item.argument, []).append(item.path)
    return arguments | {name: found if isinstance(arguments[name], list) else found[0] for name, found in paths.items()}


class _Budget:
    """Bytes left for an execution's inputs together."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0


class _Fetcher:
    """Fetches one URI under the policy, counting against the input's and the execution's caps."""

    def __init__(
        self,
        argument: str,
        uri: str,
        policy: Policy,
        cancel: CancelToken,
        budget: _Budget,
        storage_options: dict[str, Any],
    ):
        self.argument = argument
        self.uri = uri
        self.policy = policy
        self.cancel = cancel
        self.budget = budget
        self.storage_options = storage_options
        self.scheme = urlsplit(uri).scheme

    def refuse(self, why: str) -> StagingError:
        return StagingError(f"cannot read input {self.argument!r} from {without_credentials(self.uri)}: {why}")

    def fetch_to(self, target: Path, cap: int) -> int:
        self.cancel.check(f"staging input {self.argument!r}")
        try:
            with self._open(self.uri) as (source, size), open(target, "wb") as sink:
                return self._copy(source, sink, size, cap)
        except StagingError:
            raise
        except (OSError, ValueError, httpx.HTTPError) as err:
            self.cancel.check(f"staging input {self.argument!r}")
            raise self.refuse(_said(err)) from err

    def sidecar(self) -> dict[str, Any] | None:
        """The input's `<uri>.metadata.json`, when there is one that may be read; else None."""
        import json

        try:
            with self._open(self.uri + SIDECAR_SUFFIX) as (source, size):
                if size is not None and size > SIDECAR_CAP:
                    return None
                data = source.read(SIDECAR_CAP + 1)
        except (StagingError, OSError, ValueError, httpx.HTTPError):
            return None
        if len(data) > SIDECAR_CAP:
            return None
        try:
            document = json.loads(data)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def _copy(self, source: Readable, sink: BinaryIO, size: int | None, cap: int) -> int:
        if size is not None:
            self._check_size(size, cap)
        copied = 0
        while chunk := source.read(CHUNK):
            self.cancel.check(f"staging input {self.argument!r}")
            copied += len(chunk)
            self._check_size(copied, cap)
            sink.write(chunk)
        self.budget.used += copied
        return copied

    def _check_size(self, size: int, cap: int) -> None:
        if size > cap:
            raise self.refuse(f"it is larger than the {cap / 2**20:g} MiB an input may be (GRANARY_MAX_INPUT_MIB)")
        if self.budget.used + size > self.budget.limit:
            raise self.refuse(
                f"the execution's inputs would exceed {self.budget.limit / 2**20:g} MiB (GRANARY_MAX_INPUTS_MIB)"
            )

    @contextmanager
    def _open(self, uri: str) -> Iterator[tuple[Readable, int | None]]:
        if self.scheme == "file":
            with self._open_file(uri) as opened:
                yield opened
        elif self.scheme in ("http", "https"):
            with self._open_http(uri) as opened:
                yield opened
        elif self.scheme == "s3":
            with self._open_s3(uri) as opened:
                yield opened
        else:
            raise self.refuse(f"the scheme {self.scheme!r} is not one of {', '.join(STAGED_SCHEMES)}")

    @contextmanager
    def _open_file(self, uri: str) -> Iterator[tuple[Readable, int | None]]:
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise self.refuse("a file:// URI names a file on this machine (file:///path)")
        resolved = Path(os.path.realpath(unquote(parts.path)))
        root = self.policy.file_root_of(resolved)
        if root is None:
            # Which folders are allowed is the operator's to know (it is in the runner's log), not every user's.
            logger.info(
                "%s is outside GRANARY_ALLOW_FILE_ROOTS (%s)", resolved, ", ".join(self.policy.file_roots) or "none"
            )
            raise self.refuse(
                "it is not under a folder the operator allows inputs to be read from (GRANARY_ALLOW_FILE_ROOTS)"
            )
        try:
            descriptor = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self.refuse("it is a symbolic link") from err
            raise
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise self.refuse("it is not a regular file")
            # What was opened, whatever a folder on its path was swapped for meanwhile, is still under the root.
            opened = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
            if self.policy.file_root_of(opened) != root:
                raise self.refuse("it moved out of the allowed folder while it was opened")
            os.set_blocking(descriptor, True)
            handle = os.fdopen(descriptor, "rb")
        except BaseException:
            os.close(descriptor)
            raise
        with handle:
            yield handle, info.st_size

    @contextmanager
    def _open_http(self, uri: str) -> Iterator[tuple[Readable, int | None]]:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            current = uri
            for _ in range(MAX_REDIRECTS + 1):
                request = self._pinned_request(client, current)
                response = client.send(request, stream=True)
                forget = self.cancel.on_cancel(response.close)
                try:
                    if response.is_redirect and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise self.refuse(f"the server answered {response.status_code} {response.reason_phrase}")
                    length = response.headers.get("content-length")
                    yield (
                        _StreamReader(response.iter_bytes(CHUNK)),
                        int(length) if length and length.isdigit() else None,
                    )
                    return
                finally:
                    forget()
                    response.close()
            raise self.refuse(f"more than {MAX_REDIRECTS} redirects")

    def _pinned_request(self, client: httpx.Client, uri: str) -> httpx.Request:
        try:
            return pinned_request(client, "GET", uri, self.policy)
        except OutboundRefused as err:
            suffix = " (a redirect led there)" if uri != self.uri else ""
            raise self.refuse(f"{err}{suffix}") from err

    @contextmanager
    def _open_s3(self, uri: str) -> Iterator[tuple[Readable, int | None]]:
        import fsspec

        bucket = urlsplit(uri).netloc
        if ".." in urlsplit(uri).path.split("/"):  # S3 keys are text: no `..` may reach another prefix or bucket
            raise self.refuse("an s3:// key may not hold '..'")
        if not self.policy.bucket_allowed(bucket):
            raise self.refuse(f"bucket {bucket!r} is not one inputs may be read from (GRANARY_ALLOW_BUCKETS)")
        fs, path = fsspec.core.url_to_fs(uri, **self.storage_options)
        size = fs.size(path)
        handle = fs.open(path, "rb", block_size=CHUNK)
        forget = self.cancel.on_cancel(handle.close)
        try:
            yield handle, size
        finally:
            forget()
            handle.close()


class _StreamReader:
    """`read()` over an httpx byte stream, for the copy loop."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            try:
                self._pending += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data


def _said(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}"
    return str(err) or type(err).__name__


def _file_name(uri: str, argument: str) -> str:
    name = posixpath.basename(urlsplit(uri).path.rstrip("/")) or argument
    return name if name not in (".", "..") else argument


def declares_uri(spec: Any) -> bool:
    """Whether a property's schema declares a file to fetch (`format: uri`)."""
    return isinstance(spec, dict) and spec.get("format") == "uri"


def _fetchable(value: str) -> bool:
    return urlsplit(value).scheme in STAGED_SCHEMES
