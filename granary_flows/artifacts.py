"""Prefect artifacts for an execution: a results table, a link per asset, a summary, and live progress."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.logging import get_run_logger

from granary_flows.masking import Masker
from granary_flows.results import ResultAsset
from granary_flows.webhooks import output_link


def artifact_key(task: str, kind: str) -> str:
    """Artifact keys must be lower-case letters, digits and dashes."""
    return f"{task}-{kind}".lower().replace("_", "-")


def record_results(
    task: str,
    assets: list[ResultAsset],
    stac_item: str | None = None,
    presign: Callable[[str], str | None] = lambda _: None,
) -> None:
    """A table of the results (with their `s3://` or `file://` hrefs), a link artifact per asset, and one to the
    execution's STAC Item. Where the store is S3, each link is a presigned https URL that works without credentials
    until it expires (`GRANARY_PRESIGN_SECONDS`, an hour by default)."""
    rows = [
        {
            "title": a.title or "",
            "href": a.href,
            "type": a.type or "",
            "roles": ", ".join(a.roles),
            "size": "" if a.size is None else a.size,
        }
        for a in assets
    ]
    create_table_artifact(
        table=rows or [{"title": "(no results)", "href": "", "type": "", "roles": "", "size": ""}],
        key=artifact_key(task, "results"),
        description=f"Results of {task}",
    )
    if stac_item:
        link = presign(stac_item) or stac_item
        create_link_artifact(link=link, link_text="STAC Item", description=f"{task}: the execution's STAC Item")
    for asset in assets:
        presigned = presign(asset.href)
        description = f"{task}: {asset.title or asset.href}"
        if presigned:
            description += f" ({asset.href}; the link expires)"
        create_link_artifact(link=presigned or asset.href, link_text=asset.title or asset.href, description=description)


def record_quicklooks(
    task: str, execution_id: str, quicklooks: list[Any], presign: Callable[[str], str | None] = lambda _: None
) -> None:
    """The pictures of raster results on the run's page: presigned on S3, else served by `granary api`
    (`GRANARY_API_URL`) through a signed link; without either, the run page links nothing a browser could open, and
    none is made."""
    import os

    api = os.environ.get("GRANARY_API_URL", "").rstrip("/")
    lines = []
    for look in quicklooks:
        url = presign(look.href) or (output_link(api, execution_id, look.href.rsplit("/", 1)[-1]) if api else "")
        if not url:
            continue
        where = ""
        if look.bbox:
            west, south, east, north = look.bbox
            where = f"west {west:.5f}, south {south:.5f}, east {east:.5f}, north {north:.5f} (WGS 84)"
        lines += [f"### {look.title}", f"![quicklook of {look.title}]({url})", "", where, ""]
    if lines:
        create_markdown_artifact(
            markdown="\n".join(lines), key=artifact_key(task, "quicklook"), description=f"{task}: quicklooks"
        )


def record_summary(summary: dict[str, Any], log_tail: list[str]) -> None:
    """A markdown summary: task, version, image, arguments, exit code, duration, failure reason, last log lines."""
    lines = [f"# {summary['task']} {summary.get('version', '')}".rstrip(), "", "| | |", "|---|---|"]
    for label, key in (
        ("status", "status"),
        ("execution", "execution_id"),
        ("image", "image"),
        ("exit code", "exit_code"),
        ("attempts", "attempts"),
        ("duration (s)", "duration"),
        ("failure", "reason"),
        ("results", "results_uri"),
        ("STAC item", "stac_item"),
    ):
        value = summary.get(key)
        if value is not None and value != "":
            lines.append(f"| {label} | `{value}` |")
    lines += ["", "## Arguments", "```json", json.dumps(summary.get("arguments", {}), indent=2), "```"]
    if summary.get("warnings"):
        lines += ["", "## Warnings", *(f"- {warning}" for warning in summary["warnings"])]
    if log_tail:
        lines += ["", "## Last log lines", "```", *log_tail, "```"]
    create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key(summary["task"], "summary"),
        description=f"Summary of {summary['task']} execution {summary.get('execution_id')}",
    )


class ProgressArtifact:
    """Drives a progress artifact from the container's `{"progress": N}` lines; its message is masked.

    The artifact is written by a thread of its own, so that the container's log lines never wait on the Prefect API;
    updates that arrive while one is being written are folded into the newest. `flush()` waits until the artifact
    shows the last progress reported.
    """

    def __init__(self, task: str, mask: Masker | None = None):
        self.task = task
        self.mask = mask or Masker()
        self.artifact_id: UUID | None = None
        self.progress = -1.0
        self._unsent: tuple[float, str] | None = None
        self._sender: threading.Thread | None = None
        self._lock = threading.Lock()

    def update(self, percent: float, message: str | None) -> None:
        if percent == self.progress:
            return
        self.progress = percent
        with self._lock:
            self._unsent = (percent, self.mask.text(message or f"{self.task}: {percent:g}%"))
            if self._sender is None:  # the run's context goes with it: the artifact belongs to this run
                self._sender = threading.Thread(
                    target=contextvars.copy_context().run, args=(self._send,), daemon=True, name="granary-progress"
                )
                self._sender.start()

    def flush(self) -> None:
        """Wait until the last progress reported is written."""
        with self._lock:
            sender = self._sender
        if sender is not None:
            sender.join()

    def _send(self) -> None:
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
            created = create_progress_artifact(
                progress=percent, key=artifact_key(self.task, "progress"), description=description
            )
            self.artifact_id = cast(UUID, created)
        else:
            update_progress_artifact(artifact_id=self.artifact_id, progress=percent, description=description)
