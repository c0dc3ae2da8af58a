"""Where everything lives: granary's local home, and every folder and document name under the results root.

Paths under the results root are relative (`<task>/<execution-id>/...`) and joined to the root by `ResultsStore`, so
that a local folder and S3 share one layout.

Example:
    >>> execution_folder("ndvi", "0b6f")
    'ndvi/0b6f'
    >>> execution_document("ndvi", "0b6f")
    'ndvi/0b6f/granary-execution.json'
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

EXECUTION_DOCUMENT = "granary-execution.json"  # the results document, beside the outputs
PIPELINE_DOCUMENT = "granary-pipeline.json"  # a pipeline run's document
ITEM_FILE = "granary-item.json"  # an execution's STAC Item: named so that no container output is overwritten
COLLECTION_FILE = "collection.json"  # a task's STAC Collection
QUICKLOOK_PREFIX = "granary-quicklook-"  # `granary-quicklook-<raster>.png`, beside the raster's execution
RUNNER_FOLDER = ".granary"  # the runner's own records under the results root
WEBHOOKS = ".granary/webhooks"  # Granary's webhook bodies, one per execution, until its attempt reads them
BATCH_RECORDS = ".granary/batch-jobs"  # Batch job ids, written before waiting on them
BATCH_ARRAYS = ".granary/batch-arrays"  # each child's environment, read by the children of an array job
HOME_VARIABLE = "GRANARY_HOME"


def home() -> Path:
    """granary's own folder on this machine (`$GRANARY_HOME`, default `~/.granary`): the default results root, the
    outputs an upload could not send, the quickstart's logs."""
    return Path(os.environ.get(HOME_VARIABLE) or "~/.granary").expanduser()


def default_results_root() -> str:
    return str(home() / "results")


def unsent_folder(task: str, execution_id: str) -> Path:
    """Where an execution's outputs are kept when the results store refuses them, so that nothing is lost."""
    return home() / "unsent" / task / execution_id


def execution_folder(task: str, execution_id: str) -> str:
    return f"{task}/{execution_id}"


def execution_document(task: str, execution_id: str) -> str:
    return f"{task}/{execution_id}/{EXECUTION_DOCUMENT}"


def pipeline_document(pipeline: str, execution_id: str) -> str:
    return f"{pipeline}/{execution_id}/{PIPELINE_DOCUMENT}"


def item_document(task: str, execution_id: str) -> str:
    return f"{task}/{execution_id}/{ITEM_FILE}"


def collection_document(task: str) -> str:
    return f"{task}/{COLLECTION_FILE}"


def item_link_from_collection(execution_id: str) -> str:
    """The Collection's relative link to an Item."""
    return f"./{execution_id}/{ITEM_FILE}"


def step_records(pipeline: str, execution_id: str) -> str:
    """The folder of a pipeline run's completed-step records."""
    return f"{pipeline}/{execution_id}/steps"


def step_record(pipeline: str, execution_id: str, key: str) -> str:
    return f"{step_records(pipeline, execution_id)}/{key}.json"


def webhook_document(execution_id: str) -> str:
    """Where a body posted to an execution's results webhook waits for its attempt (outside the execution's folder,
    which an attempt's outputs replace)."""
    return f"{WEBHOOKS}/{execution_id}.json"


def batch_record(execution_id: str) -> str:
    return f"{BATCH_RECORDS}/{execution_id}.json"


def batch_array_items(array_id: str) -> str:
    return f"{BATCH_ARRAYS}/{array_id}.json"


def work_folder(flow_run_id: str, execution_id: str) -> Path:
    """An execution's folder on the runner's host (staged inputs, the mounted output folder), kept by run so that a
    restarted runner finds it again, and removed when the execution ends."""
    return work_root() / flow_run_id / execution_id


def work_root() -> Path:
    """The work folders of this Prefect server's runs: two servers' runners on one host never touch each other's."""
    server = hashlib.sha256(os.environ.get("PREFECT_API_URL", "").encode()).hexdigest()[:12]
    return home() / "work" / server


def is_runner_document(relative: str) -> bool:
    """Whether a path in an execution's folder is one of the runner's own documents, which no container may write
    (what a container writes under such a name is dropped, so that nothing it wrote can pose as the runner's).

    Example:
        >>> is_runner_document("granary-execution.json"), is_runner_document("maps/granary-item.json")
        (True, False)
    """
    return relative in (EXECUTION_DOCUMENT, PIPELINE_DOCUMENT, ITEM_FILE) or relative.startswith(
        (QUICKLOOK_PREFIX, f"{RUNNER_FOLDER}/")
    )


def output_path_in(href: str, own: str | None) -> str | None:
    """The one decision of what an execution may call its own output: the path inside its folder `own` (a URI) that
    `href` names, as that folder's URI and a path under it, or as a path relative to it (the only form accepted when
    `own` is None); None for anything else (a host path, another execution's or another bucket's object, a `..` out
    of the folder, a scheme of its own).

    Example:
        >>> own = "s3://b/runs/ndvi/1"
        >>> output_path_in(f"{own}/maps/a.tif", own), output_path_in("./maps/a.tif", own)
        ('maps/a.tif', 'maps/a.tif')
        >>> [output_path_in(href, own) for href in (f"{own}/../2/x", "s3://b/runs/ndvi/2/x", "/etc/passwd")]
        [None, None, None]
    """
    folder = own.rstrip("/") + "/" if own else None
    path = href[len(folder) :] if folder and href.startswith(folder) else href
    if not path or path.startswith("/") or ":" in path.split("/")[0] or "\\" in path:
        return None
    if ".." in path.split("/"):
        return None
    normal = posixpath.normpath(path)
    return normal if normal not in (".", "") else None
