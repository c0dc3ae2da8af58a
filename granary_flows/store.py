"""The results store: one root (a local folder by default, or `s3://bucket/prefix`), read and written via fsspec.

An execution's outputs live under `<root>/<task>/<execution-id>/`; the local folder and S3 share this one code path.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from granary_flows.errors import StorageError

EXECUTION_DOCUMENT = "granary-execution.json"
DEFAULT_ROOT = "~/.granary/results"


class ResultsStore:
    """Where executions' outputs and results documents live.

    Args:
        root: a URI fsspec understands (`file:///...`, `s3://bucket/prefix`) or a local path; default
            `GRANARY_RESULTS_URI`, else `~/.granary/results`.

    Example:
        >>> store = ResultsStore("/tmp/granary-results")
        >>> store.execution_uri("ndvi", "0b6f")
        'file:///tmp/granary-results/ndvi/0b6f'
    """

    def __init__(self, root: str | None = None):
        root = root or os.environ.get("GRANARY_RESULTS_URI") or DEFAULT_ROOT
        if "://" not in root:
            root = Path(root).expanduser().resolve().as_uri()
        self.root = root.rstrip("/")
        self.fs, self._root_path = url_to_fs(self.root)

    def execution_uri(self, task: str, execution_id: str) -> str:
        return f"{self.root}/{task}/{execution_id}"

    def uri_of(self, path: str) -> str:
        """The URI for a path of this store's file system."""
        return Path(path).as_uri() if "file" in self.fs.protocol else self.fs.unstrip_protocol(path)

    def check_writable(self) -> None:
        """Raises StorageError unless a file can be written and removed under the root."""
        probe = f"{self._root_path}/.granary-probe-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(self._root_path, exist_ok=True)
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except (OSError, PermissionError, ValueError) as err:
            raise StorageError(f"the results root {self.root} cannot be written: {err}") from err

    def put_outputs(self, local_dir: Path, task: str, execution_id: str) -> dict[str, str]:
        """Upload every file under `local_dir` to the execution's folder, replacing what an earlier attempt left.

        Returns:
            relative path -> URI of each stored file.

        Raises:
            StorageError: when any upload fails, so that outputs are never lost silently.
        """
        target = f"{self._root_path}/{task}/{execution_id}"
        stored = {}
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            self.fs.makedirs(target, exist_ok=True)
            for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
                relative = file.relative_to(local_dir).as_posix()
                self.fs.put_file(str(file), f"{target}/{relative}")
                stored[relative] = self.uri_of(f"{target}/{relative}")
        except OSError as err:
            raise StorageError(f"uploading outputs to {self.root}/{task}/{execution_id} failed: {err}") from err
        return stored

    def write_json(self, relative: str, document: Any) -> str:
        """Write `document` at `<root>/<relative>` and return its URI.

        Raises:
            StorageError: naming the path.
        """
        path = f"{self._root_path}/{relative}"
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, json.dumps(document, indent=2, default=str).encode())
        except OSError as err:
            raise StorageError(f"writing {path} failed: {err}") from err
        return self.uri_of(path)

    def read_json(self, relative: str) -> Any:
        """The JSON document at `<root>/<relative>`.

        Raises:
            FileNotFoundError: when there is none.
        """
        with self.fs.open(f"{self._root_path}/{relative}", "rb") as handle:
            return json.load(handle)
