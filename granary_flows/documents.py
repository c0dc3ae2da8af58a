"""The documents an execution leaves beside its outputs (`granary-execution.json`, a pipeline run's
`granary-pipeline.json`), which are also its flow run's return value, and the one way they are read back.

Example:
    >>> read_results(ResultsStore("/tmp/none"), "ndvi", "0b6f")  # doctest: +SKIP
    ExecutionDocument(execution_id='0b6f', task='ndvi', ...)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from granary_flows import layout
from granary_flows.quicklook import Quicklook
from granary_flows.results import ResultAsset
from granary_flows.store import ResultsStore
from granary_flows.words import SpecWord


class ExecutionStatus(SpecWord):
    """The results document's `status` words (OGC's, for what ended)."""

    SUCCESSFUL = "successful"
    FAILED = "failed"


class ExecutionDocument(BaseModel):
    """The results document of one execution: the flow run's return value and `granary-execution.json`."""

    execution_id: str
    task: str
    version: str
    status: ExecutionStatus
    arguments: dict[str, Any]
    results: list[ResultAsset]
    value: Any = None
    source: str | None = None
    results_uri: str
    image: str | None = None
    image_digest: str | None = None
    submitter: str | None = None
    exit_code: int | None = None
    attempts: int = 0
    duration: float = 0.0
    reason: str | None = None
    outputs: dict[str, Any] = {}
    warnings: list[str] = []
    stac_item: str | None = None
    quicklooks: list[Quicklook] = []
    started: datetime
    finished: datetime


class StepStatus(SpecWord):
    """How a step of a pipeline run ended (and how the run did: successful or failed, or running meanwhile)."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not run"
    RUNNING = "running"


class StepSummary(BaseModel):
    """How one step of a pipeline run ended, and the executions (one per item when mapped) it consists of."""

    task: str
    status: StepStatus = StepStatus.NOT_RUN
    reason: str | None = None
    keep: bool = False  # its outputs are final results, which `granary cleanup` leaves alone
    executions: list[str] = []
    reused: list[bool] = []
    results: Any = None


class PipelineDocument(BaseModel):
    """A pipeline run's document, `<root>/<pipeline>/<execution-id>/granary-pipeline.json`, and its return value."""

    execution_id: str
    pipeline: str
    version: str
    status: StepStatus
    arguments: dict[str, Any]
    resumes: str | None = None
    steps: dict[str, StepSummary] = {}
    started: datetime
    finished: datetime | None = None


ResultsDocument = ExecutionDocument | PipelineDocument


def parse_results(data: Any) -> ResultsDocument:
    """A results document from its JSON (a stored file, or a flow run's persisted return value).

    Raises:
        ValueError: it is neither an execution's nor a pipeline run's document.
    """
    if isinstance(data, dict) and "pipeline" in data:
        return PipelineDocument.model_validate(data)
    return ExecutionDocument.model_validate(data)


def read_results(store: ResultsStore, task: str, execution_id: str) -> ResultsDocument:
    """The results document of an execution (or pipeline run) of `task`, from the results store.

    Raises:
        FileNotFoundError: the store holds none for it.
        ValueError: what it holds is not a results document.
    """
    for path in (layout.execution_document(task, execution_id), layout.pipeline_document(task, execution_id)):
        try:
            return parse_results(store.read_json(path))
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"no results document of {task} {execution_id} under {store.root}")
