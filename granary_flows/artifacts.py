"""What an execution shows on its Prefect run page: one report (its results, each a link that opens, its quicklooks,
its STAC Item and a summary), and live progress while the container reports some.

Every artifact passes through `_publish`, which masks every text with the execution's masker: no secret reaches an
artifact, whatever wrote it.

Links open in a browser, at any later time, for whoever may see the execution: a link `granary api` serves
(`GRANARY_API_URL`), on a local root and on S3 alike, signed for that one file so that it opens by itself for
`GRANARY_LINK_SECONDS` (7 days; Prefect's UI is another origin than the API's) and after a sign-in once that has passed.
Without an API: on S3 a presigned https link that works as long; on a local root the file's own `file://` address,
shown as text (a browser refuses to open it).
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from granary_flows import masking
from granary_flows.layout import output_path_in
from granary_flows.webhooks import output_link


def artifact_key(task: str, kind: str) -> str:
    """Artifact keys must be lower-case letters, digits and dashes."""
    return f"{task}-{kind}".lower().replace("_", "-")


class Links:
    """Where a person opens an execution's stored files from Prefect's UI (see the module's docstring).

    Args:
        own: the execution's folder in the results store.
        execution_id: the execution.
        presign: the store's presigning, for links that work without credentials (S3).
    """

    def __init__(self, own: str, execution_id: str, presign: Callable[[str], str | None]):
        self.own = own
        self.execution_id = execution_id
        self.presign = presign
        self.api = os.environ.get("GRANARY_API_URL", "").rstrip("/")

    def __call__(self, href: str) -> str | None:
        """A link that opens `href` in a browser, or None when there is none."""
        relative = output_path_in(href, self.own) if href.startswith(self.own + "/") else None
        if self.api and relative is not None:
            return output_link(self.api, self.execution_id, relative)
        return self.presign(href)


def record_report(document: dict[str, Any], links: Links, log_tail: list[str]) -> None:
    """The execution's report, one markdown artifact: results (linked), quicklooks, STAC Item, summary, arguments,
    warnings and last log lines. A failed execution's report has its failure in place of results.

    Args:
        document: the results document (`documents.ExecutionDocument`) as JSON, or a failure's summary of it.
        links: how its files open from the run page.
        log_tail: the container's last lines.
    """
    task = document["task"]
    successful = document.get("status") == "successful"
    lines = [f"# {task} {document.get('version', '')}: {document.get('status', '')}".rstrip(), ""]
    if successful:
        lines += _results_table(document.get("results", []), links)
        lines += _quicklooks(document.get("quicklooks", []), links)
        if document.get("stac_item"):
            stac = links(document["stac_item"])
            lines += [f"STAC Item: {_link('granary-item.json', stac, document['stac_item'])}", ""]
    lines += ["| | |", "|---|---|"]
    for label, key in (
        ("execution", "execution_id"),
        ("image", "image"),
        ("exit code", "exit_code"),
        ("attempts", "attempts"),
        ("duration (s)", "duration"),
        ("failure", "reason"),
        ("results", "results_uri"),
    ):
        value = document.get(key)
        if value is not None and value != "":
            lines.append(f"| {label} | `{value}` |")
    lines += ["", "## Arguments", "```json", json.dumps(document.get("arguments", {}), indent=2), "```"]
    if document.get("warnings"):
        lines += ["", "## Warnings", *(f"- {warning}" for warning in document["warnings"])]
    if log_tail:
        lines += ["", "## Last log lines", "```", *log_tail, "```"]
    _publish(
        create_markdown_artifact,
        markdown="\n".join(lines),
        key=artifact_key(task, "results" if successful else "summary"),
        description=f"{task} execution {document.get('execution_id')}: {document.get('status')}",
    )


def _results_table(assets: list[dict[str, Any]], links: Links) -> list[str]:
    if not assets:
        return ["(no results)", ""]
    rows = ["| result | type | size | roles |", "|---|---|---|---|"]
    for asset in assets:
        title = str(asset.get("title") or asset["href"].rsplit("/", 1)[-1])
        size = "" if asset.get("size") is None else f"{asset['size']:,}"
        rows.append(f"| {_link(title, links(asset['href']), asset['href'])} | {asset.get('type') or ''} | {size} | "
                    f"{', '.join(asset.get('roles') or [])} |")  # fmt: skip
    return [*rows, ""]


def _quicklooks(quicklooks: list[dict[str, Any]], links: Links) -> list[str]:
    lines = []
    for look in quicklooks:
        url = links(look["href"])
        if not url:
            continue
        where = ""
        if look.get("bbox"):
            west, south, east, north = look["bbox"]
            where = f"west {west:.5f}, south {south:.5f}, east {east:.5f}, north {north:.5f} (WGS 84)"
        lines += [f"### {look['title']}", f"![quicklook of {look['title']}]({url})", "", where, ""]
    return lines


def _link(text: str, url: str | None, href: str) -> str:
    label = text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")
    return f"[{label}]({url})" if url else f"{label} (`{href}`)"


def _publish(create: Callable[..., Any], **fields: Any) -> Any:
    """Create an artifact with every text of it masked by the execution's masker: the one way out to artifacts."""
    mask = masking.current()
    return create(**{name: mask.document(value) for name, value in fields.items()})


PROGRESS_AFTER = 1.0  # seconds after its first progress line before a container's progress is shown


class ProgressArtifact:
    """Drives a progress artifact from the container's `{"progress": N}` lines; its message is masked. Made only
    when the container reports progress and is still running a second later: the progress of a shorter one would
    only repeat its report (two calls to the server for nothing a person could watch).

    The artifact is written by a thread of its own, so that the container's log lines never wait on the Prefect API;
    updates that arrive while one is being written are folded into the newest. `flush()` waits until the artifact
    shows the last progress reported.
    """

    def __init__(self, task: str):
        self.task = task
        self.artifact_id: UUID | None = None
        self.progress = -1.0
        self._unsent: tuple[float, str] | None = None
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()
        self._first_at: float | None = None
        self._ended = threading.Event()

    def update(self, percent: float, message: str | None) -> None:
        if percent == self.progress:
            return
        self.progress = percent
        if self._first_at is None:
            self._first_at = time.monotonic()
        with self._lock:
            self._unsent = (percent, message or f"{self.task}: {percent:g}%")
            if self._sender is None:  # the run's context goes with it: the artifact belongs to this run
                self._sender = threading.Thread(
                    target=contextvars.copy_context().run, args=(self._send,), daemon=True, name="granary-progress"
                )
                self._sender.start()

    def flush(self) -> None:
        """The container ended: wait until the last progress reported is written (if it is shown at all)."""
        self._ended.set()
        with self._lock:
            sender = self._sender
        if sender is not None:
            sender.join()

    def _send(self) -> None:
        if self.artifact_id is None and self._first_at is not None:
            wait = self._first_at + PROGRESS_AFTER - time.monotonic()
            if wait > 0 and self._ended.wait(wait):  # it ended first: its report says the rest
                with self._lock:
                    self._sender = None
                return
        while True:
            with self._lock:
                unsent, self._unsent = self._unsent, None
                if unsent is None:
                    self._sender = None
                    return
            try:
                self._write(*unsent)
            except Exception as err:  # the run goes on; its page shows an older progress
                get_run_logger().warning("the progress artifact was not updated: %s", err)

    def _write(self, percent: float, description: str) -> None:
        if self.artifact_id is None:
            # create_progress_artifact returns a UUID when called from sync code, as here
            created = _publish(
                create_progress_artifact,
                progress=percent,
                key=artifact_key(self.task, "progress"),
                description=description,
            )
            self.artifact_id = cast(UUID, created)
        else:
            _publish(update_progress_artifact, artifact_id=self.artifact_id, progress=percent, description=description)
