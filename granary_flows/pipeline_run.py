"""Running a pipeline: each step (each item of a mapped step) is a Prefect task run named after it, executing the
step's task as usual; every completed step is recorded in the results store, so that a retried or resumed run reuses
it instead of starting its container again.

A step's record is keyed by its task, the task's version and its resolved arguments. A run finds records of its own
(a retry: the UI's Retry, `prefect flow-run retry`, `granary resume ID`) and of the run it resumes
(`granary resume ID -p name=value`, which tags the new run `resumes:<ID>`); a step whose arguments changed, directly or
because an earlier step ran again, has no record and runs.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Completed, State

from granary_flows import layout, prefect_internals
from granary_flows.artifacts import artifact_key
from granary_flows.cancellation import CancelToken
from granary_flows.definition import RuntimeKind, TaskDefinition
from granary_flows.documents import ExecutionDocument, PipelineDocument, StepStatus, StepSummary
from granary_flows.errors import ArgumentsInvalid, GranaryError, PipelineFailed, ReferenceProblem
from granary_flows.execution import Execution
from granary_flows.pipeline import PipelineDefinition, Step
from granary_flows.policy import Policy, current_policy
from granary_flows.references import Mapped, holds, resolve, whole_reference
from granary_flows.runtimes.base import Attempt, Runtime
from granary_flows.scale import recipe_context
from granary_flows.store import ResultsStore
from granary_flows.validation import prepare_arguments

RESUMES_TAG = "resumes:"


SUCCESSFUL, FAILED, SKIPPED, NOT_RUN = StepStatus.SUCCESSFUL, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.NOT_RUN


def resumed_execution(tags: list[str]) -> str | None:
    """The execution a run resumes, from its `resumes:<id>` tag."""
    return next((tag.removeprefix(RESUMES_TAG) for tag in tags if tag.startswith(RESUMES_TAG)), None)


def step_key(pipeline: str, definition: TaskDefinition, arguments: dict[str, Any]) -> str:
    """What makes two executions of a step the same: pipeline, task, task version and resolved arguments."""
    identity = {"pipeline": pipeline, "task": definition.name, "version": definition.version, "arguments": arguments}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


class StepRecords:
    """Completed steps of a run, and of the run it resumes, in the results store."""

    def __init__(self, store: ResultsStore, pipeline: str, execution_id: str, resumes: str | None):
        self.store = store
        self.pipeline = pipeline
        self.execution_id = execution_id
        self.resumes = resumes

    def find(self, key: str) -> dict[str, Any] | None:
        """The results document of a completed execution with this key whose outputs are still stored."""
        for run in filter(None, (self.execution_id, self.resumes)):
            try:
                record = self.store.read_json(self._path(run, key))
            except FileNotFoundError:
                continue
            document = ExecutionDocument.model_validate(record["document"])
            if not self.store.exists(layout.execution_document(document.task, document.execution_id)):
                continue  # cleaned up since: run it again
            if run != self.execution_id:  # a resume of this run finds it here
                self.store.write_json(self._path(self.execution_id, key), record)
            return dict(record["document"])
        return None

    def save(self, key: str, step: str, document: dict[str, Any]) -> None:
        self.store.write_json(self._path(self.execution_id, key), {"step": step, "key": key, "document": document})

    def _path(self, run: str, key: str) -> str:
        return layout.step_record(self.pipeline, run, key)


def run_pipeline(
    pipeline: PipelineDefinition,
    arguments: dict[str, Any],
    *,
    store: ResultsStore,
    runtimes: dict[RuntimeKind, Runtime],
    runner_id: str = "",
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Run the pipeline's steps in the current flow run, each as soon as the steps it refers to are done.

    Returns:
        The pipeline document (`PipelineDocument`) as JSON-ready data.

    Raises:
        ArgumentsInvalid: before any step starts.
        PipelineFailed: naming the steps that failed and those that could not run because of them.
    """
    logger = get_run_logger()
    execution_id = str(current_flow_run.id)
    validated = prepare_arguments(pipeline.name, pipeline.arguments_schema, arguments)
    resumes = resumed_execution(list(current_flow_run.tags))
    document = PipelineDocument(
        execution_id=execution_id,
        pipeline=pipeline.name,
        version=pipeline.version,
        status=StepStatus.RUNNING,
        arguments=validated,
        resumes=resumes,
        steps={step.name: StepSummary(task=step.task, keep=_kept(pipeline, step)) for step in pipeline.steps},
        started=datetime.now(timezone.utc),
    )
    _save(store, document)
    if resumes:
        logger.info("resuming execution %s: its steps that completed with the same arguments are reused", resumes)
    records = StepRecords(store, pipeline.name, execution_id, resumes)
    _Scheduler(pipeline, document, records, store, runtimes, runner_id, cancel or CancelToken()).run(validated)
    document.finished = datetime.now(timezone.utc)
    broken = {name: s for name, s in document.steps.items() if s.status in (FAILED, NOT_RUN)}
    document.status = FAILED if broken else SUCCESSFUL
    _save(store, document)
    _record_steps(document)
    if broken:
        raise PipelineFailed(
            "; ".join(f"{name} {summary.status}: {summary.reason}" for name, summary in broken.items())
            + f" (resume with `granary resume {execution_id}`)"
        )
    return document.model_dump(mode="json")


class _Scheduler:
    """Starts each step once the steps it refers to have finished, up to the flow's task runner's limit."""

    def __init__(
        self,
        pipeline: PipelineDefinition,
        document: PipelineDocument,
        records: StepRecords,
        store: ResultsStore,
        runtimes: dict[RuntimeKind, Runtime],
        runner_id: str,
        cancel: CancelToken,
    ):
        self.cancel = cancel
        self.pipeline = pipeline
        self.document = document
        self.records = records
        self.store = store
        self.runtimes = runtimes
        self.runner_id = runner_id
        self.logger = get_run_logger()
        self.running: dict[str, list[PrefectFuture[Any]]] = {}
        self.finished: set[str] = set()
        self.needs = {step.name: pipeline.dependencies(step) for step in pipeline.steps}

    def run(self, arguments: dict[str, Any]) -> None:
        scope: dict[str, Any] = {"args": arguments, "steps": {}}
        while len(self.finished) < len(self.pipeline.steps):
            self.cancel.check(f"pipeline run {self.document.execution_id}")
            for step in self.pipeline.steps:
                waiting = step.name not in self.finished and step.name not in self.running
                if waiting and all(name in self.finished for name in self.needs[step.name]):
                    self._start(step, scope)
            if self.running:
                self._collect_one(scope)

    def _start(self, step: Step, scope: dict[str, Any]) -> None:
        summary = self.document.steps[step.name]
        for name in self.needs[step.name]:
            needed = self.document.steps[name]
            if needed.status in (FAILED, NOT_RUN):
                what = "failed" if needed.status == FAILED else "did not run"
                self._finish(step, NOT_RUN, f"needs step {name!r}, which {what}")
                self.logger.warning("step %s not run: %s", step.name, summary.reason)
                return
            if needed.status == SKIPPED:
                return self._skip(step, f"needs step {name!r}, which was skipped")
        try:
            if step.when is not None and not holds(step.when, scope):
                return self._skip(step, f"when: {step.when} is false")
            items = self._items(step, scope)
            arguments = [resolve(step.arguments, scope | item) for item in items]
        except ReferenceProblem as err:
            _refused(step.name)(str(err), return_state=True)
            return self._finish(step, FAILED, str(err))
        definition = self.pipeline.task_of(step)
        recipe = self._recipe(scope) if definition.seed is not None else None
        if step.map is not None and len(arguments) > 1:
            self._submit_together(step, definition, arguments, recipe)
        self.running[step.name] = [
            self._step_task(step, definition, index if step.map is not None else None, recipe).submit(resolved)
            for index, resolved in enumerate(arguments)
        ]
        if not arguments:
            self.running.pop(step.name)
            scope["steps"][step.name] = Mapped()
            self._finish(step, SUCCESSFUL, "mapped over an empty list")

    def _items(self, step: Step, scope: dict[str, Any]) -> list[dict[str, Any]]:
        """The scope additions of each execution of the step: one, or one per item of the list it maps over."""
        if step.map is None:
            return [{}]
        reference = whole_reference(step.map)
        values = resolve(step.map, scope)
        if not isinstance(values, list):
            raise ReferenceProblem(f"map: {reference} is a {type(values).__name__}, not a list")
        return [{"item": value, "index": index} for index, value in enumerate(values)]

    def _collect_one(self, scope: dict[str, Any]) -> None:
        """Wait until some execution ends; a step whose executions have all ended is finished."""
        waiting = [future for futures in self.running.values() for future in futures]
        prefect_internals.first_done(waiting)
        for name, futures in list(self.running.items()):
            if not all(prefect_internals.is_done(future) for future in futures):
                continue
            del self.running[name]
            step = next(s for s in self.pipeline.steps if s.name == name)
            documents, errors = [], []
            for index, future in enumerate(futures):
                try:
                    documents.append(future.result())
                except Exception as err:  # the step's failure, recorded and reported
                    errors.append(f"item {index}: {err}" if step.map is not None else str(err))
            summary = self.document.steps[name]
            summary.executions = [d["execution_id"] for d in documents]
            summary.reused = [bool(d.get("reused_from")) for d in documents]
            summary.results = (
                [d["results"] for d in documents]
                if step.map is not None
                else (documents[0]["results"] if documents else None)
            )
            if errors:
                self._finish(step, FAILED, "; ".join(errors))
            else:
                scope["steps"][name] = Mapped(documents) if step.map is not None else documents[0]
                self._finish(step, SUCCESSFUL, None)

    def _submit_together(
        self, step: Step, definition: TaskDefinition, arguments: list[dict[str, Any]], recipe: Any
    ) -> None:
        """Where the runtime can (a Batch task whose job reads its item by index), start the first attempts of a
        mapped step's items as one submission, before their task runs wait on them: 1,000 items are one SubmitJob.
        Items already done, already submitted or with invalid arguments are left to their own task runs."""
        runtime = self.runtimes[definition.runtime_kind]
        if not runtime.submits_together(definition):
            return
        policy = current_policy()  # one read of a policy block, not one per item

        def planned(resolved: dict[str, Any]) -> Attempt | None:
            key = step_key(self.pipeline.name, definition, resolved)
            execution_id = _execution_id(self.document.execution_id, key)
            if self.records.find(key) is not None or runtime.resuming(execution_id) is not None:
                return None
            try:
                return self._execution(definition, resolved, execution_id, recipe, policy).first_attempt()
            except ArgumentsInvalid:
                return None

        # Two reads of the results store an item: in parallel, each in a copy of this run's context.
        with ThreadPoolExecutor(16, "granary-plan") as pool:
            futures = [pool.submit(contextvars.copy_context().run, planned, resolved) for resolved in arguments]
            attempts = [attempt for future in futures if (attempt := future.result()) is not None]
        try:
            submitted = runtime.submit_together(attempts) if len(attempts) > 1 else None
        except GranaryError as err:  # each item then submits a job of its own, and fails on its own if it must
            self.logger.warning("step %s: the items could not be submitted together: %s", step.name, err)
            return
        if submitted:
            self.logger.info("step %s: submitted %d items as Batch array job %s", step.name, len(attempts), submitted)

    def _execution(
        self,
        definition: TaskDefinition,
        arguments: dict[str, Any],
        execution_id: str,
        recipe: Any,
        policy: Policy | None = None,
    ) -> Execution:
        return Execution(
            definition,
            arguments,
            store=self.store,
            runtime=self.runtimes[definition.runtime_kind],
            runner_id=self.runner_id,
            execution_id=execution_id,
            cancel=self.cancel,
            context=recipe,
            policy=policy,
        )

    def _skip(self, step: Step, reason: str) -> None:
        _skipped(step.name)(reason)
        self.logger.info("step %s skipped: %s", step.name, reason)
        self._finish(step, SKIPPED, reason)

    def _finish(self, step: Step, status: StepStatus, reason: str | None) -> None:
        summary = self.document.steps[step.name]
        summary.status, summary.reason = status, reason
        self.finished.add(step.name)

    def _recipe(self, scope: dict[str, Any]) -> dict[str, Any]:
        """Scale's `RECIPE` for a Seed step: the pipeline's inputs and the results of the steps before."""

        def read_sidecar(href: str) -> dict[str, Any] | None:
            try:
                found = json.loads(self.store.read_bytes(href))
            except (OSError, ValueError):
                return None
            return found if isinstance(found, dict) else None

        steps = {name: list(value) if isinstance(value, Mapped) else value for name, value in scope["steps"].items()}
        return recipe_context(self.pipeline.arguments_schema, scope["args"], steps, read_sidecar)

    def _step_task(self, step: Step, definition: TaskDefinition, index: int | None, recipe: Any = None) -> Any:
        pipeline, records = self.pipeline.name, self.records
        execution_of = self.document.execution_id

        def execute(arguments: dict[str, Any]) -> Any:
            key = step_key(pipeline, definition, arguments)
            found = records.find(key)
            if found is not None:
                found["reused_from"] = found["execution_id"]
                get_run_logger().info("reused execution %s: same task, version and arguments", found["execution_id"])
                return Completed(name="Cached", message=f"reused execution {found['execution_id']}", data=found)
            execution_id = _execution_id(execution_of, key)
            document = self._execution(definition, arguments, execution_id, recipe).run()
            records.save(key, step.name, document)
            return document

        return task(
            name=step.name,
            task_run_name=step.name if index is None else f"{step.name}[{index}]",
            persist_result=False,
            cache_policy=NO_CACHE,
        )(execute)


def _execution_id(pipeline_execution: str, key: str) -> str:
    """The same key in the same run gets the same execution id: a retry finds a Batch job it submitted."""
    return str(uuid.uuid5(uuid.UUID(pipeline_execution), key))


def _skipped(name: str) -> Callable[..., State[Any]]:
    """A task run for a step that was skipped, so that it shows as skipped among the others."""

    def skip(reason: str) -> State[Any]:
        return Completed(name="Skipped", message=reason)

    return task(name=name, task_run_name=name, persist_result=False, cache_policy=NO_CACHE)(skip)


def _refused(name: str) -> Callable[..., Any]:
    """A failed task run for a step whose references resolve to nothing, saying which."""

    def refuse(problem: str) -> None:
        raise ReferenceProblem(problem)

    return task(name=name, task_run_name=name, persist_result=False, cache_policy=NO_CACHE)(refuse)


def _kept(pipeline: PipelineDefinition, step: Step) -> bool:
    return step.keep if step.keep is not None else pipeline.is_final(step)


def _save(store: ResultsStore, document: PipelineDocument) -> None:
    store.write_json(
        layout.pipeline_document(document.pipeline, document.execution_id), document.model_dump(mode="json")
    )


def _record_steps(document: PipelineDocument) -> None:
    lines = [f"# {document.pipeline} {document.version}: {document.status}", ""]
    if document.resumes:
        lines += [f"Resumes execution `{document.resumes}`.", ""]
    lines += ["| step | task | status | executions | reused | note |", "|---|---|---|---|---|---|"]
    for name, step in document.steps.items():
        reused = sum(step.reused)
        lines.append(
            f"| {name} | {step.task} | {step.status} | {len(step.executions)} | {reused} | {step.reason or ''} |"
        )
    create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key(document.pipeline, "steps"),
        description=f"Steps of {document.pipeline} execution {document.execution_id}",
    )
