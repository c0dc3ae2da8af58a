"""`granary cleanup`: interim results of pipeline runs that ended long enough ago.

A pipeline run's interim results are the outputs of its steps that other steps consumed, and its step records (what a
retry or a resume would reuse). Final results (steps nothing else uses, or marked `keep: true`) and plain task
executions are never removed. An execution reused by several runs is removed only when every one of them qualifies:
ended (successful or failed) before the cut-off. Runs still going, or that ended since, keep everything they use.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from granary_flows import layout, stac
from granary_flows.documents import PipelineDocument, StepStatus
from granary_flows.store import ResultsStore


class Removal(NamedTuple):
    """One folder `granary cleanup` removes (or would, with `--dry-run`), and why."""

    relative: str  # under the results root
    bytes: int
    why: str


def interim_results(store: ResultsStore, older_than: timedelta, now: datetime | None = None) -> list[Removal]:
    """What may go: interim step outputs and step records of pipeline runs that ended before `now - older_than`."""
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    runs = _pipeline_runs(store)
    over = (StepStatus.SUCCESSFUL, StepStatus.FAILED)
    ended = {
        run.execution_id for run in runs if run.status in over and run.finished is not None and run.finished < cutoff
    }
    kept: set[tuple[str, str]] = set()
    interim: dict[tuple[str, str], str] = {}
    for run in runs:
        for name, step in run.steps.items():
            for execution_id in step.executions:
                if run.execution_id in ended and not step.keep:
                    interim.setdefault((step.task, execution_id), f"step {name} of {run.pipeline} {run.execution_id}")
                else:
                    kept.add((step.task, execution_id))
    removals = [
        _removal(store, layout.execution_folder(task, execution_id), why)
        for (task, execution_id), why in sorted(interim.items())
        if (task, execution_id) not in kept and store.exists(layout.execution_folder(task, execution_id))
    ]
    for run in runs:
        records = layout.step_records(run.pipeline, run.execution_id)
        if run.execution_id in ended and store.exists(records):
            why = f"step records of {run.pipeline} {run.execution_id} (ended {run.finished:%Y-%m-%d %H:%M})"
            removals.append(_removal(store, records, why))
    return removals


def _removal(store: ResultsStore, relative: str, why: str) -> Removal:
    return Removal(relative, store.size(relative), why)


def remove(store: ResultsStore, removals: list[Removal]) -> int:
    """Remove them; the executions' Items leave their tasks' STAC Collections. Returns the bytes freed."""
    by_task: dict[str, set[str]] = {}
    for removal in removals:
        store.remove_folder(removal.relative)
        parts = removal.relative.split("/")
        if len(parts) == 2:  # <task>/<execution-id>
            by_task.setdefault(parts[0], set()).add(parts[1])
    for task, execution_ids in by_task.items():
        stac.unpublish(store, task, execution_ids)
    return sum(removal.bytes for removal in removals)


def _pipeline_runs(store: ResultsStore) -> list[PipelineDocument]:
    runs = []
    for document in store.find_json(f"*/*/{layout.PIPELINE_DOCUMENT}"):
        try:
            runs.append(PipelineDocument.model_validate(document))
        except ValueError:
            continue  # not one of ours: leave it alone
    return runs


def parse_age(text: str) -> timedelta:
    """`5d`, `12h`, `30m`, `45s` or `2w`.

    Example:
        >>> parse_age("5d")
        datetime.timedelta(days=5)
    """
    units: dict[str, Any] = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text[:-1], text[-1:]
    try:
        if unit not in units:
            raise ValueError
        return timedelta(**{units[unit]: float(number)})
    except ValueError as err:
        raise ValueError(f"{text!r} is not an age: give a number and a unit, s, m, h, d or w (e.g. 5d)") from err
