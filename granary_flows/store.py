"""The results store: one root (a local folder by default, or `s3://bucket/prefix`), read and written via fsspec.

An execution's outputs live under `<root>/<task>/<execution-id>/`; the local folder and S3 share this one code path.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from fsspec.core import url_to_fs
from pydantic import BaseModel

from granary_flows import layout
from granary_flows.errors import StorageError
from granary_flows.layout import default_results_root

if TYPE_CHECKING:
    from granary_flows.outputs import WrittenFile

RESULTS_BLOCK_VARIABLE = "GRANARY_RESULTS_BLOCK"
UPDATE_TRIES = 50  # conditional writes of a shared document before giving up (each after a short random wait)
# What a file system raises when a store is unreachable or refuses: s3fs lets botocore's own errors through.
STORE_ERRORS = (OSError, ValueError, BotoCoreError)


def multipart_chunk() -> int:
    """Bytes per part of an upload to S3 (`GRANARY_MULTIPART_CHUNK_MIB`, 16): files from 2 parts up are uploaded in
    parts, several at once; S3's smallest part is 5 MiB."""
    return int(float(os.environ.get("GRANARY_MULTIPART_CHUNK_MIB", "16")) * 2**20)


def presign_seconds() -> int:
    """How long a presigned link works (`GRANARY_PRESIGN_SECONDS`, an hour)."""
    return int(os.environ.get("GRANARY_PRESIGN_SECONDS", "3600"))


class StoredOutputs(BaseModel):
    """The files of an execution's output folder in the store: relative path -> URI, and their sizes."""

    uris: dict[str, str] = {}
    sizes: dict[str, int] = {}


class ResultsStore:
    """Where executions' outputs and results documents live.

    Args:
        root: a URI fsspec understands (`file:///...`, `s3://bucket/prefix`) or a local path; default the prefect-aws
            `S3Bucket` block named by `GRANARY_RESULTS_BLOCK`, else `GRANARY_RESULTS_URI`, else `$GRANARY_HOME/results`
            (`~/.granary/results`).
        storage_options: for the file system (credentials, endpoint); for `s3://` roots, default those of the
            `AwsCredentials` block named by `GRANARY_AWS_CREDENTIALS_BLOCK`, if any.

    Example:
        >>> store = ResultsStore("/tmp/granary-results")
        >>> store.execution_uri("ndvi", "0b6f")
        'file:///tmp/granary-results/ndvi/0b6f'
    """

    def __init__(self, root: str | None = None, storage_options: dict[str, Any] | None = None):
        if root is None and os.environ.get(RESULTS_BLOCK_VARIABLE):
            root, storage_options = _from_s3_bucket_block(os.environ[RESULTS_BLOCK_VARIABLE])
        root = root or os.environ.get("GRANARY_RESULTS_URI") or default_results_root()
        if "://" not in root:
            root = Path(root).expanduser().resolve().as_uri()
        if storage_options is None and root.startswith("s3://") and os.environ.get("GRANARY_AWS_CREDENTIALS_BLOCK"):
            from granary_flows.aws import credentials, s3_storage_options

            storage_options = s3_storage_options(credentials())
        self.root = root.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self._root_path = url_to_fs(self.root, **self.storage_options)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def execution_uri(self, task: str, execution_id: str) -> str:
        return f"{self.root}/{layout.execution_folder(task, execution_id)}"

    def uri(self, relative: str) -> str:
        """The URI of `<root>/<relative>`."""
        return f"{self.root}/{relative}"

    def _make_folder(self, path: str) -> None:
        # Object stores have no folders, and s3fs's makedirs would create a missing bucket: a deleted or mistyped
        # bucket must fail the write instead.
        if not self.is_s3:
            self.fs.makedirs(path, exist_ok=True)

    def uri_of(self, path: str) -> str:
        """The URI for a path of this store's file system."""
        return Path(path).as_uri() if "file" in self.fs.protocol else self.fs.unstrip_protocol(path)

    def check_writable(self) -> None:
        """Raises StorageError unless a file can be written and removed under the root."""
        probe = f"{self._root_path}/.granary-probe-{uuid.uuid4().hex}"
        try:
            self._make_folder(self._root_path)
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except STORE_ERRORS as err:
            raise StorageError(f"the results root {self.root} cannot be written: {err}") from err

    def clear_outputs(self, task: str, execution_id: str) -> None:
        """Remove what an earlier attempt of the execution left in its folder."""
        target = f"{self._root_path}/{layout.execution_folder(task, execution_id)}"
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            self.fs.invalidate_cache(target)
        except STORE_ERRORS as err:
            raise StorageError(f"clearing {self.execution_uri(task, execution_id)} failed: {err}") from err

    def put_outputs(self, files: list[WrittenFile], task: str, execution_id: str) -> StoredOutputs:
        """Upload these files (an output folder's, as `outputs.written_files` lists them) to the execution's folder,
        replacing what an earlier attempt left.

        On S3 the files are uploaded concurrently, and large ones in parts (multipart), several parts at once.

        Raises:
            StorageError: when any upload fails, so that outputs are never lost silently.
        """
        target = f"{self._root_path}/{layout.execution_folder(task, execution_id)}"
        options = {"chunksize": multipart_chunk()} if self.is_s3 else {}
        self.clear_outputs(task, execution_id)
        try:
            self._make_folder(target)
            for folder in sorted({file.relative.rpartition("/")[0] for file in files} - {""}):
                self._make_folder(f"{target}/{folder}")
            if files:
                self.fs.put([str(f.path) for f in files], [f"{target}/{f.relative}" for f in files], **options)
        except STORE_ERRORS as err:
            uri = self.execution_uri(task, execution_id)
            raise StorageError(f"uploading outputs to {uri} failed: {err}") from err
        return StoredOutputs(
            uris={f.relative: self.uri_of(f"{target}/{f.relative}") for f in files},
            sizes={f.relative: f.size for f in files},
        )

    def put_file(self, local: Path, task: str, execution_id: str, name: str) -> str:
        """Store one file the runner made (a quicklook) in the execution's folder; returns its URI.

        Raises:
            StorageError: naming the file.
        """
        path = f"{self._root_path}/{layout.execution_folder(task, execution_id)}/{name}"
        try:
            self.fs.put_file(str(local), path)
        except STORE_ERRORS as err:
            raise StorageError(f"storing {name} in {self.execution_uri(task, execution_id)} failed: {err}") from err
        return self.uri_of(path)

    def list_outputs(self, task: str, execution_id: str) -> StoredOutputs:
        """What a container wrote into the execution's folder itself (Batch jobs write to `OUTPUT_URI`)."""
        target = f"{self._root_path}/{layout.execution_folder(task, execution_id)}"
        self.fs.invalidate_cache(target)
        try:
            found = self.fs.find(target, detail=True)  # one listing; nothing for a folder that is not there
        except STORE_ERRORS as err:
            raise StorageError(f"listing {self.execution_uri(task, execution_id)} failed: {err}") from err
        stored = StoredOutputs()
        for path, info in sorted(found.items()):
            relative = path[len(target) + 1 :]
            stored.uris[relative] = self.uri_of(path)
            stored.sizes[relative] = int(info.get("size") or 0)
        return stored

    def read_bytes(self, uri: str) -> bytes:
        """The content of a stored file, given its URI (read afresh: another process may have written it)."""
        self.fs.invalidate_cache(uri)
        return bytes(self.fs.cat_file(uri))

    def stream(self, uri: str, chunk: int = 2**20) -> Iterator[bytes]:
        """A stored file's content in chunks, read as they are sent (never held whole). The file is opened now, so
        that a missing one raises here.

        Raises:
            FileNotFoundError: there is no such file.
        """
        self.fs.invalidate_cache(uri)
        handle = self.fs.open(uri, "rb")

        def chunks() -> Iterator[bytes]:
            with handle:
                while data := handle.read(chunk):
                    yield data

        return chunks()

    def presign(self, uri: str, within: str, seconds: int | None = None) -> str | None:
        """A https link to an `s3://` file that works without credentials until it expires; None for other stores,
        and for anything that is not under `within` (an execution's own prefix): no link to anybody else's object."""
        if not (self.is_s3 and uri.startswith("s3://")) or layout.output_path_in(uri, within) is None:
            return None
        return str(self.fs.sign(uri, expiration=seconds or presign_seconds()))

    def write_json(self, relative: str, document: Any, indent: int | None = 2) -> str:
        """Write `document` at `<root>/<relative>` and return its URI.

        Args:
            indent: as `json.dumps`'s. None for a document that grows without bound: the json module encodes with
                its C encoder only then, many times faster.

        Raises:
            StorageError: naming the path.
        """
        path = f"{self._root_path}/{relative}"
        data = json.dumps(document, indent=indent, default=str).encode()
        try:
            self._make_folder(path.rsplit("/", 1)[0])
            if self.is_s3:  # a PUT replaces the object whole
                self.fs.pipe_file(path, data)
            else:  # written aside and renamed over, so that a concurrent reader never sees half a document
                aside = f"{path}.{uuid.uuid4().hex}.tmp"
                self.fs.pipe_file(aside, data)
                os.replace(aside, path)
        except STORE_ERRORS as err:
            raise StorageError(f"writing {path} failed: {err}") from err
        return self.uri_of(path)

    def move(self, relative: str, to: str) -> str:
        """Move `<root>/<relative>` to `<root>/<to>`; returns its new URI.

        Raises:
            StorageError: naming both.
        """
        source, target = f"{self._root_path}/{relative}", f"{self._root_path}/{to}"
        try:
            self._make_folder(target.rsplit("/", 1)[0])
            self.fs.mv(source, target)
        except STORE_ERRORS as err:
            raise StorageError(f"moving {source} to {target} failed: {err}") from err
        return self.uri_of(target)

    def remove(self, relative: str) -> None:
        """Remove `<root>/<relative>` if it is there."""
        path = f"{self._root_path}/{relative}"
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except STORE_ERRORS as err:
            raise StorageError(f"removing {path} failed: {err}") from err

    def read_all_json(self, folder: str) -> list[Any]:
        """Every JSON document directly under `<root>/<folder>`."""
        return self.find_json(f"{folder}/*.json")

    def update_json(self, relative: str, change: Callable[[Any], Any], indent: int | None = None) -> Any:
        """Read-modify-write of a document that several processes change (a task's STAC Collection): `change` is
        given the document (None when there is none yet) and returns it changed, or None to leave it as it is.
        Returns what was written.

        On a local root a file lock holds the other writers off. On S3 the write is conditional (If-Match the ETag
        read, If-None-Match for a new document): when another process wrote first, S3 refuses it and `change` is
        made again on what that one wrote, so no writer's change is ever lost.

        Raises:
            StorageError: naming the path, when the store fails or others kept writing first UPDATE_TRIES times.
        """
        path = f"{self._root_path}/{relative}"
        if not self.is_s3:
            with self._locked(path):
                try:
                    current = self.read_json(relative)
                except FileNotFoundError:
                    current = None
                updated = change(current)
                if updated is not None:
                    self.write_json(relative, updated, indent)
                return updated
        bucket, key = path.split("/", 1)
        for attempt in range(UPDATE_TRIES):
            self.fs.invalidate_cache(path)
            try:
                etag = self.fs.info(path)["ETag"]
                current = json.loads(self.fs.cat_file(path))
                condition = {"IfMatch": etag}
            except FileNotFoundError:
                current, condition = None, {"IfNoneMatch": "*"}
            updated = change(current)
            if updated is None:
                return None
            data = json.dumps(updated, indent=indent, default=str).encode()
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
                return updated
            except STORE_ERRORS as err:
                if not _written_first(err):
                    raise StorageError(f"writing {path} failed: {err}") from err
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # another writer came first: try again on theirs
        raise StorageError(f"writing {path} failed: other writers came first {UPDATE_TRIES} times")

    @contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        """A lock on a local document (`<path>.lock`) across processes."""
        lock_path = Path(f"{path}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def size(self, relative: str) -> int:
        """Bytes under `<root>/<relative>`, a file or a folder."""
        return int(self.fs.du(f"{self._root_path}/{relative}", total=True))

    def remove_folder(self, relative: str) -> None:
        path = f"{self._root_path}/{relative}"
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except STORE_ERRORS as err:
            raise StorageError(f"removing {path} failed: {err}") from err

    def find_json(self, pattern: str) -> list[Any]:
        """Every JSON document whose path under the root matches the glob `pattern`, listed afresh."""
        self.fs.invalidate_cache()  # another process may have written since: no listing of any folder is kept
        documents = []
        for path in sorted(self.fs.glob(f"{self._root_path}/{pattern}")):
            with self.fs.open(path, "rb") as handle:
                documents.append(json.load(handle))
        return documents

    def exists(self, relative: str) -> bool:
        path = f"{self._root_path}/{relative}"
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def read_json(self, relative: str) -> Any:
        """The JSON document at `<root>/<relative>`.

        Raises:
            FileNotFoundError: when there is none.
        """
        path = f"{self._root_path}/{relative}"
        self.fs.invalidate_cache(path)  # another process may have written it since this one last looked
        return json.loads(self.fs.cat_file(path))  # one GET: a document replaced meanwhile is read whole, old or new


def _written_first(err: BaseException) -> bool:
    """Whether S3 refused a conditional write because the object changed since it was read (412) or another
    conditional write to it was under way (409). s3fs turns botocore's error into an OSError; the cause stays."""
    while err is not None:
        if isinstance(err, ClientError):
            return err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def _from_s3_bucket_block(name: str) -> tuple[str, dict[str, Any]]:
    """The root and s3fs options of a prefect-aws `S3Bucket` block: `s3://<bucket_name>/<bucket_folder>`."""
    from prefect_aws import AwsCredentials, S3Bucket

    from granary_flows.aws import s3_storage_options

    try:
        bucket = cast(S3Bucket, S3Bucket.load(name))
    except ValueError as err:
        raise StorageError(f"S3Bucket block {name!r} cannot be loaded: {err}") from err
    root = f"s3://{bucket.bucket_name}/{bucket.bucket_folder}".rstrip("/")
    options = s3_storage_options(bucket.credentials) if isinstance(bucket.credentials, AwsCredentials) else {}
    return root, options
