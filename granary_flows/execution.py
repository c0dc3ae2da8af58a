"""The shared execution workflow, written once for every runtime: validate, stage, attempt (with retries by error
category), collect and store the results, report.

What differs per runtime (staging, where outputs go, how they reach the store) is behind `runtimes.base.Runtime`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, cast

from prefect import State, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run as current_task_run
from prefect.states import Cancelled
from pydantic import BaseModel

from granary_flows import artifacts, layout, quicklook, stac
from granary_flows.cancellation import CancelToken
from granary_flows.contract import RESULTS_FILE, parse_progress
from granary_flows.definition import TaskDefinition
from granary_flows.documents import ExecutionDocument, ExecutionStatus
from granary_flows.errors import ErrorCategory, ExecutionCancelled, ExecutionFailed, StorageError
from granary_flows.formats import seed
from granary_flows.invocation import Invocation, invocation_for
from granary_flows.masking import Masker, masking, uri_credentials, without_credentials
from granary_flows.policy import MIB, Policy, current_policy
from granary_flows.provenance import started_by
from granary_flows.quicklook import Quicklook
from granary_flows.results import CollectedResults, ResultAsset, collect
from granary_flows.runtimes.base import Attempt, AttemptOutcome, Runtime
from granary_flows.scale import input_metadata
from granary_flows.sidecars import read_sidecars
from granary_flows.staging import StagedInput, container_arguments, stage_inputs, uri_arguments
from granary_flows.store import ResultsStore, StoredOutputs
from granary_flows.validation import prepare_arguments
from granary_flows.webhooks import link_seconds, webhook_url


class Attempted(BaseModel):
    """What the last attempt gave: how it ended, its results, and a Seed task's JSON outputs."""

    outcome: AttemptOutcome
    results: CollectedResults
    outputs: dict[str, Any] = {}
    warnings: list[str] = []


class Execution:
    """One execution of a task inside the current flow run.

    A task's execution is its flow run, and has its id; a pipeline step's execution has an id of its own
    (`execution_id`) and belongs to the pipeline's flow run, whose id its containers carry, for cancellation.

    Args:
        definition: the task.
        arguments: as given (a user, a schedule, the run form, a pipeline step).
        store: the results store.
        runtime: the runtime of the task's kind.
        runner_id: carried by every container or job started, so that a restarted runner finds them.
        execution_id: a pipeline step's own id; default the flow run's.
        cancel: set when the run is cancelled; every phase stops at once.
        context: Scale's input context of a pipeline step (`RECIPE`), for Seed tasks.

    Example:
        >>> Execution(load_definition("deployments/hello.yaml"), {"name": "Ada"}, store=ResultsStore(),
        ...           runtime=DockerRuntime()).run()  # doctest: +SKIP
    """

    def __init__(
        self,
        definition: TaskDefinition,
        arguments: dict[str, Any],
        *,
        store: ResultsStore,
        runtime: Runtime,
        runner_id: str = "",
        execution_id: str | None = None,
        cancel: CancelToken | None = None,
        context: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ):
        self.definition = definition
        self.given = arguments
        self.store = store
        self.runtime = runtime
        self.runner_id = runner_id
        self.flow_run_id = str(current_flow_run.id)
        self.execution_id = execution_id or self.flow_run_id
        self.cancel = cancel or CancelToken()
        self.recipe = context
        self.policy = policy or current_policy()
        self.logger = get_run_logger()
        self.started = datetime.now(timezone.utc)
        self.work = layout.work_folder(self.flow_run_id, self.execution_id)
        self.attempts: list[int] = []
        self.secrets = seed.resolve_secrets(definition.seed) if definition.seed else {}
        self.mask = Masker([*self.secrets.values(), *uri_credentials(arguments)])
        self.progress = artifacts.ProgressArtifact(definition.name)
        self.last_attempt: Attempt | None = None

    def run(self) -> dict[str, Any]:
        """Run it to its end.

        Returns:
            The results document (`ExecutionDocument`) as JSON-ready data.

        Raises:
            ArgumentsInvalid: before anything starts, listing every violation.
            StagingError: when an input could not be fetched, before any container exists.
            ExecutionFailed: when the last attempt failed; the summary artifact says why.
            ExecutionCancelled: when the execution was cancelled.
        """
        with masking(self.mask):  # everything logged, shown or written from here on passes through it
            try:
                return self._run()
            except Exception as err:  # its message becomes the run's state message: masked like the rest
                err.args = tuple(self.mask.document(list(err.args)))
                raise

    def _run(self) -> dict[str, Any]:
        arguments = prepare_arguments(self.definition.name, self.definition.arguments_schema, self.given)
        self.cancel.check(f"execution {self.execution_id}")
        try:
            staged = self._stage(arguments)
            try:
                attempted = self._attempts(arguments, staged)
            except ExecutionFailed as err:
                self._report_failure(arguments, err)
                raise
            return self._report_success(arguments, attempted)
        finally:
            if self.last_attempt is not None:  # its outcome is stored now (or it failed): its container can go
                self.runtime.release(self.last_attempt)
            shutil.rmtree(self.work, ignore_errors=True)
            with contextlib.suppress(OSError):  # the run's folder, unless another of its executions still works there
                self.work.parent.rmdir()

    def _stage(self, arguments: dict[str, Any]) -> list[StagedInput]:
        """Fetch `format: uri` inputs for a runtime whose containers cannot (local Docker has no network)."""
        uris = uri_arguments(self.definition.arguments_schema, arguments)
        if not self.runtime.stages_inputs or not uris:
            return []
        if self.runtime.resuming(self.execution_id) is not None:  # the container that runs on reads what was staged
            return []
        self.work.mkdir(parents=True, exist_ok=True)
        staged = stage_inputs(
            uris,
            self.work / "inputs",
            self.policy,
            self.cancel,
            self._s3_options(),
            sidecars=self.definition.seed is not None,
        )
        self.logger.info(
            "staged %s", ", ".join(f"{item.argument} <- {without_credentials(item.uri)}" for item in staged)
        )
        return staged

    def _s3_options(self) -> dict[str, Any]:
        """Credentials for `s3://` inputs: the results store's, else the AwsCredentials block's, else boto3's chain."""
        if self.store.is_s3:
            return self.store.storage_options
        from granary_flows import aws

        block = aws.configured_block()
        return aws.s3_storage_options(aws.credentials(block)) if block else {}

    def _attempts(self, arguments: dict[str, Any], staged: list[StagedInput]) -> Attempted:
        policy = self.definition.retries

        def retry_on_category(_task: Any, _task_run: Any, state: Any) -> bool:
            error = state.data
            return isinstance(error, ExecutionFailed) and error.category in policy.on

        @task(
            name=f"run-{self.definition.name}",
            retries=policy.attempts,
            retry_delay_seconds=policy.delay,
            retry_condition_fn=retry_on_category,
            persist_result=False,
            cache_policy=NO_CACHE,
        )
        def attempt() -> Attempted | State[Any]:
            try:
                return self._attempt(arguments, staged)
            except ExecutionCancelled as err:  # a person stopped it: the attempt ends Cancelled, not Failed
                return Cancelled(message=str(err))
            except ExecutionFailed as err:  # masked before Prefect logs it as the attempt's failure
                err.reason = self.mask.text(err.reason)
                err.args = (err.reason,)
                raise

        final = attempt(return_state=True)
        if final.is_cancelled():
            raise ExecutionCancelled(self.cancel.reason or "the execution was cancelled")
        return cast(Attempted, final.result())

    def first_attempt(self) -> Attempt:
        """The first attempt as it would start, without starting it: for a runtime that submits several executions'
        attempts at once (the children of a Batch array job), which then each find theirs as already submitted.

        Raises:
            ArgumentsInvalid: as `run` would.
        """
        arguments = prepare_arguments(self.definition.name, self.definition.arguments_schema, self.given)
        return self._attempt_of(arguments, [], 1)

    def _attempt_of(self, arguments: dict[str, Any], staged: list[StagedInput], number: int) -> Attempt:
        attempt = self.runtime.prepare(
            Attempt(
                execution_id=self.execution_id,
                flow_run_id=self.flow_run_id,
                number=number,
                task=self.definition,
                invocation=Invocation(),
                work_dir=self.work,
                runner_id=self.runner_id,
                input_dir=self.work / "inputs" if staged else None,
                cancel=self.cancel,
            ),
            self.store,
        )
        attempt.invocation = self._invocation(arguments, staged, attempt)
        return attempt

    def _attempt(self, arguments: dict[str, Any], staged: list[StagedInput]) -> Attempted:
        resumed = self.runtime.resuming(self.execution_id)
        number = resumed or current_task_run.run_count or 1
        self.attempts.append(number)
        if number > 1 and resumed is None:
            self.logger.info("attempt %d of %d", number, self.definition.retries.attempts + 1)
        attempt = self._attempt_of(arguments, staged, number)
        self.mask.add(attempt.invocation.masked)
        self.cancel.check(f"execution {self.execution_id}")
        self.last_attempt = attempt
        lines = self._line_handler()
        outcome = self.runtime.run(attempt, lines)
        lines.close()
        delivered = self._delivered(attempt)  # read now, whatever the outcome: the next attempt may post its own
        try:
            self.cancel.check(f"execution {self.execution_id}")
            self._raise_for_failure(outcome)
            return self._collected(attempt, outcome, delivered)
        except Exception:
            self.runtime.release(attempt)  # failed: a retry starts a container of its own
            raise

    def _collected(self, attempt: Attempt, outcome: AttemptOutcome, delivered: Any) -> Attempted:
        """What a successful attempt wrote, in the results store and read as its results."""
        started = time.perf_counter()
        collected = self.runtime.collect(attempt, self.store, self.policy)
        collected.stored = self._masked_names(collected.stored)
        self.logger.info(
            "outputs: %d file(s), %.1f MiB, collected in %.1f s",
            len(collected.stored.uris),
            sum(collected.stored.sizes.values()) / MIB,
            time.perf_counter() - started,
        )
        for warning in collected.warnings:
            self.logger.warning(warning)
        try:
            results = collect(
                collected.stored,
                self.store.read_bytes,
                outcome.last_stdout_line,
                self.definition.outputs.files,
                self.definition.input_names,
                attempt.invocation.output_path,
                webhook=delivered,
                clean=self.mask.document,
            )
        finally:  # read, whether it reports success or failure: its text reaches a person only masked, from here
            self._drop_results_file(collected.stored)
        outputs = self._seed_outputs(collected.stored.uris)
        return Attempted(outcome=outcome, results=results, outputs=outputs, warnings=collected.warnings)

    def _drop_results_file(self, stored: StoredOutputs) -> None:
        """`results.json` is how a container reports, not a result: once read (and masked into the results document),
        it goes, so that nothing it held is served as it was written."""
        if RESULTS_FILE in stored.uris:
            self.store.remove(f"{layout.execution_folder(self.definition.name, self.execution_id)}/{RESULTS_FILE}")
            stored.uris.pop(RESULTS_FILE)
            stored.sizes.pop(RESULTS_FILE, None)

    def _delivered(self, attempt: Attempt) -> Any:
        """What the job posted to Granary's results webhook during this attempt (read once: a retry may post
        again), or None."""
        if "GRANARY_WEBHOOK_URL" not in attempt.invocation.environment:  # it was given none
            return None
        path = layout.webhook_document(self.execution_id)
        try:
            body = self.store.read_json(path)
        except FileNotFoundError:
            return None
        self.store.remove(path)
        return body

    def _invocation(self, arguments: dict[str, Any], staged: list[StagedInput], attempt: Attempt) -> Invocation:
        seen = container_arguments(arguments, staged)
        context = None
        if self.definition.seed is not None:
            context = input_metadata(self.definition, arguments, staged, self.recipe)
        return invocation_for(
            self.definition,
            seen,
            execution_id=self.execution_id,
            attempt=attempt.number,
            output_uri=attempt.output_uri,
            secrets=self.secrets,
            input_mib=sum(item.size for item in staged) / 2**20,
            input_metadata=context,
            passable=self.policy.pass_environment,
            webhook=webhook_url(self.execution_id) if self.execution_id == self.flow_run_id else None,
        )

    def _line_handler(self) -> LineBudget:
        """Each container line goes to the run's logs, up to the budget; progress lines also drive the progress
        artifact. The lines arrive on the runtime's own thread: each is handled in this run's context (its logger,
        its masker)."""
        context = contextvars.copy_context()
        progress, logger = self.progress, self.logger

        def handle(line: str) -> None:
            parsed = parse_progress(line)
            if parsed is not None:
                progress.update(*parsed)
            logger.info(line)

        self.lines = LineBudget(lambda line: context.run(handle, line), max_log_lines())
        return self.lines

    def _raise_for_failure(self, outcome: AttemptOutcome) -> None:
        platform = f" ({outcome.detail})" if outcome.detail else ""
        tail = [self.mask.text(line) for line in outcome.log_tail]
        if outcome.killed_reason:
            raise ExecutionFailed(outcome.killed_reason + platform, ErrorCategory.SYSTEM, outcome.exit_code, tail)
        if outcome.exit_code == 0:
            return
        known = self.definition.errors.get(outcome.exit_code) if outcome.exit_code is not None else None
        if known:
            detail = f": {known.description}" if known.description else ""
            reason = f"exit code {outcome.exit_code} ({known.name}, a {known.category.value} error){detail}{platform}"
            raise ExecutionFailed(reason, known.category, outcome.exit_code, tail)
        code = "no exit code" if outcome.exit_code is None else f"exit code {outcome.exit_code}"
        raise ExecutionFailed(f"{code}{platform}", ErrorCategory.JOB, outcome.exit_code, tail)

    def _seed_outputs(self, stored: dict[str, str]) -> dict[str, Any]:
        """The JSON outputs a Seed task declares, from `seed.outputs.json`."""
        if not self.definition.seed or not self.definition.seed.outputs_json:
            return {}
        uri = stored.get(seed.OUTPUTS_FILE)
        try:
            document = json.loads(self.store.read_bytes(uri)) if uri else {}
            return seed.outputs_from(document, self.definition.seed.outputs_json)
        except ValueError as err:
            raise ExecutionFailed(str(err), ErrorCategory.JOB) from err

    def _quicklooks(self, results: list[ResultAsset]) -> list[Quicklook]:
        """Pictures of the raster results, drawn from the local output folder (Docker), stored beside them."""
        attempt = getattr(self, "last_attempt", None)
        if attempt is None or attempt.output_dir is None or not hasattr(self.runtime, "client"):
            return []
        looks = []
        for asset in results:
            if not quicklook.is_raster(asset.model_dump()) or "data" not in asset.roles:
                continue
            relative = asset.href.removeprefix(self.store.execution_uri(self.definition.name, self.execution_id) + "/")
            local = attempt.output_dir / relative
            if not local.is_file() or local.is_symlink():
                continue
            name = f"{layout.QUICKLOOK_PREFIX}{local.stem}.png"
            try:
                bbox = quicklook.picture(self.runtime.client, local, self.work / "quicklooks" / name, asset.title or "")
                href = self.store.put_file(
                    self.work / "quicklooks" / name, self.definition.name, self.execution_id, name
                )
            except (RuntimeError, StorageError) as err:
                self.logger.warning("%s", err)
                continue
            looks.append(Quicklook(title=asset.title or relative, href=href, bbox=bbox))
        return looks

    def _summary(self, arguments: dict[str, Any]) -> dict[str, Any]:
        attempt = getattr(self, "last_attempt", None)
        return {
            "task": self.definition.name,
            "version": self.definition.version,
            "execution_id": self.execution_id,
            "submitter": submitter(),
            "image": self.definition.image,
            "image_digest": attempt.image_digest if attempt else None,
            "arguments": arguments,
            "results_uri": self.store.execution_uri(self.definition.name, self.execution_id),
        }

    def _report_failure(self, arguments: dict[str, Any], err: ExecutionFailed) -> None:
        err.reason = self.mask.text(err.reason)
        err.args = (err.reason,)
        summary = self._summary(arguments) | {
            "status": ExecutionStatus.FAILED,
            "reason": err.reason,
            "exit_code": err.exit_code,
            "attempts": len(self.attempts),
            "duration": _seconds_since(self.started),
        }
        self.progress.flush()
        artifacts.record_report(self.mask.document(summary), self._links(), err.log_tail)

    def _report_success(self, arguments: dict[str, Any], attempted: Attempted) -> dict[str, Any]:
        document = ExecutionDocument(
            **self._summary(arguments),
            status=ExecutionStatus.SUCCESSFUL,
            results=attempted.results.assets,
            value=self.mask.document(attempted.results.value),
            outputs=self.mask.document(attempted.outputs),
            source=attempted.results.source,
            exit_code=attempted.outcome.exit_code,
            attempts=len(self.attempts),
            duration=_seconds_since(self.started),
            warnings=[self.mask.text(w) for w in attempted.warnings],
            started=self.started,
            finished=datetime.now(timezone.utc),
        )
        sidecars, warnings = read_sidecars(document.results, self.store.read_bytes)
        for warning in warnings:
            self.logger.warning(warning)
        document.warnings += warnings
        name = self.definition.name
        document.quicklooks = self._quicklooks(document.results)
        described = [self.mask.model(sidecar) for sidecar in sidecars]  # their properties are the container's text
        item = stac.execution_item(self.mask.document(document.model_dump(mode="json")), described)
        document.stac_item = stac.publish(
            store=self.store, task=name, title=self.definition.title, description=self.definition.description, item=item
        )
        results = self.mask.document(document.model_dump(mode="json"))
        self.store.write_json(layout.execution_document(name, self.execution_id), results)
        self.progress.flush()  # written meanwhile, off the container's log stream
        artifacts.record_report(results, self._links(), attempted.outcome.log_tail)
        self.logger.info("%d result(s) stored under %s", len(document.results), document.results_uri)
        return results

    def _links(self) -> artifacts.Links:
        own = self.store.execution_uri(self.definition.name, self.execution_id)
        return artifacts.Links(own, self.execution_id, lambda uri: self.store.presign(uri, own, link_seconds()))

    def _masked_names(self, stored: StoredOutputs) -> StoredOutputs:
        """The outputs, none of them named with a secret: such a file is moved to its masked name in the store (one
        path for every runtime), so that no link, asset key or listing shows the secret."""
        masked_names = {relative: self.mask.text(relative) for relative in stored.uris}
        renamed = {relative: masked for relative, masked in masked_names.items() if masked != relative}
        if not renamed:
            return stored
        folder = layout.execution_folder(self.definition.name, self.execution_id)
        uris, sizes = dict(stored.uris), dict(stored.sizes)
        for relative, masked in renamed.items():
            uris[masked] = self.store.move(f"{folder}/{relative}", f"{folder}/{masked}")
            sizes[masked] = sizes.pop(relative, 0)
            del uris[relative]
        self.logger.warning("%d output name(s) held a secret: stored under the masked name", len(renamed))
        return StoredOutputs(uris=uris, sizes=sizes)


def max_log_lines() -> int:
    """How many of an attempt's lines reach the run's logs (`GRANARY_MAX_LOG_LINES`, 10,000); the rest are counted,
    their last ones kept and said at the end."""
    return int(os.environ.get("GRANARY_MAX_LOG_LINES", "10000"))


class LineBudget:
    """Forwards a container's lines to the run's logs up to `budget`; past it, counts them and keeps the last
    `TAIL`, which `close()` says after a line naming how many were not forwarded. So a flood costs the runner no more
    than its budget, and the run's logs are complete or say they are not."""

    TAIL = 100

    def __init__(self, forward: Callable[[str], None], budget: int):
        self.forward = forward
        self.budget = budget
        self.seen = 0
        self.tail: deque[str] = deque(maxlen=self.TAIL)

    def __call__(self, line: str) -> None:
        self.seen += 1
        if self.seen <= self.budget:
            self.forward(line)
        else:
            self.tail.append(line)

    def close(self) -> None:
        """Say what was not forwarded, and the last lines."""
        if self.seen <= self.budget:
            return
        over = self.seen - self.budget
        self.forward(
            f"[granary: {over:,} more line(s) than the {self.budget:,} a run's logs take (GRANARY_MAX_LOG_LINES): "
            f"{over - len(self.tail):,} not shown, the last {len(self.tail)} follow]"
        )
        for line in self.tail:
            self.forward(line)


def submitter() -> str:
    """Who started the current run (`provenance.started_by`)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return started_by(context.flow_run if context else None)


def _seconds_since(started: datetime) -> float:
    return round((datetime.now(timezone.utc) - started).total_seconds(), 3)
