"""The AWS Batch runtime: one job per attempt, watched with backoff, its CloudWatch lines streamed into the run.

The job id is written to the results store before waiting (`<root>/.granary/batch-jobs/<execution-id>.json`), so a
process that dies mid-wait leaves enough behind for the retried run to re-attach instead of submitting again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from granary_flows import aws, layout
from granary_flows.contract import MAX_LINE
from granary_flows.definition import RuntimeKind, TaskDefinition
from granary_flows.errors import RuntimeUnavailable, StorageError
from granary_flows.outputs import kept_outputs
from granary_flows.policy import Policy
from granary_flows.runtimes.base import (
    LABEL_ATTEMPT,
    LABEL_EXECUTION,
    LABEL_RUNNER,
    LABEL_TASK,
    Attempt,
    AttemptOutcome,
    Collected,
    Orphan,
    Runtime,
    run_logger,
)
from granary_flows.store import ResultsStore
from granary_flows.words import SpecWord

LOG_TAIL = 20


class BatchStatus(SpecWord):
    """AWS Batch's job statuses."""

    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


NOT_STARTED = (BatchStatus.SUBMITTED, BatchStatus.PENDING, BatchStatus.RUNNABLE)
FINISHED = (BatchStatus.SUCCEEDED, BatchStatus.FAILED)
LOG_GROUP = "/aws/batch/job"
MAX_POLL_FAILURES = 5  # consecutive failed status reads (after botocore's own retries) before giving up
MIN_TIMEOUT = 60  # Batch refuses attemptDurationSeconds below 60
# Batch's words for an attempt that died with its host rather than by its own fault: retried as `system` errors.
LOST_HOST = re.compile(r"Host EC2 .*terminated|spot|instance .*(terminated|retired|reclaimed)|capacity", re.IGNORECASE)
TIMED_OUT = re.compile(r"timeout|duration exceeded|time exceeded", re.IGNORECASE)

logger = logging.getLogger("granary.batch")


class Polling(BaseModel):
    """How often a job's status and logs are read: from `minimum` seconds, growing by `factor` while nothing
    changes, up to `maximum`. At most 60 / `minimum` status calls a minute per job."""

    minimum: float = Field(default_factory=lambda: float(os.environ.get("GRANARY_BATCH_POLL_MIN", "1")))
    maximum: float = Field(default_factory=lambda: float(os.environ.get("GRANARY_BATCH_POLL_MAX", "20")))
    factor: float = 1.5
    log_page: int = 10_000  # events per GetLogEvents call (CloudWatch's own maximum)
    # CloudWatch may show a job's last lines a moment after the job ends: waited for only where they matter.
    settle: float = Field(default_factory=lambda: float(os.environ.get("GRANARY_BATCH_LOG_SETTLE", "1")))


class JobRecord(BaseModel):
    """What is written before waiting on a job, so that a later process can find it again."""

    execution_id: str
    task: str
    job_id: str
    job_name: str
    job_queue: str
    attempt: int
    runner_id: str
    submitted: datetime
    flow_run_id: str = ""  # a pipeline step's pipeline run
    array_job_id: str = ""  # the array job whose child `job_id` is


class BatchRuntime(Runtime):
    """Runs attempts as AWS Batch jobs on the task's queue and job definition; the jobs read their inputs and write
    their outputs (to `OUTPUT_URI`) themselves.

    Args:
        store: the results store; it must be on S3, since the job writes its outputs to `OUTPUT_URI` itself.
        polling: status and log polling; default from `GRANARY_BATCH_POLL_MIN` / `GRANARY_BATCH_POLL_MAX`.
        credentials_block: an `AwsCredentials` block name; default `$GRANARY_AWS_CREDENTIALS_BLOCK`, else boto3's chain.
    """

    kind = RuntimeKind.BATCH

    def __init__(self, store: ResultsStore, polling: Polling | None = None, credentials_block: str | None = None):
        self.store = store
        self.polling = polling or Polling()
        self._block = credentials_block
        self._watching: dict[str, str] = {}  # execution id -> job id
        self._wake: dict[str, threading.Event] = {}
        self._stopped: dict[str, str] = {}  # execution id -> what stop() did, said by the waiting thread
        self._owned: dict[str, set[str]] = {}  # flow run id -> the executions it waits on (a pipeline's steps)
        self._arrays: dict[str, dict[str, list[str]]] = {}  # flow run id -> array job id -> its children's executions

    @property
    def batch(self) -> Any:
        return aws.client("batch", self._block)

    @property
    def logs(self) -> Any:
        return aws.client("logs", self._block)

    def prepare(self, attempt: Attempt, store: ResultsStore) -> Attempt:
        return attempt.model_copy(update={"output_uri": store.execution_uri(attempt.task.name, attempt.execution_id)})

    def collect(self, attempt: Attempt, store: ResultsStore, policy: Policy) -> Collected:
        listed = store.list_outputs(attempt.task.name, attempt.execution_id)
        stored, forged, warnings = kept_outputs(listed, policy)
        folder = layout.execution_folder(attempt.task.name, attempt.execution_id)
        for relative in forged:
            store.remove(f"{folder}/{relative}")
        return Collected(stored=stored, warnings=warnings)

    def resuming(self, execution_id: str) -> int | None:
        record = self._read_record(execution_id)
        return record.attempt if record else None

    def run(self, attempt: Attempt, on_line: Callable[[str], None]) -> AttemptOutcome:
        say = run_logger()
        record = self._read_record(attempt.execution_id)
        if record is not None and record.array_job_id:
            say.info("waiting on Batch job %s, a child of array job %s", record.job_id, record.array_job_id)
        elif record is not None:
            say.info(
                "re-attaching to Batch job %s (attempt %d), submitted before this process",
                record.job_id,
                record.attempt,
            )
        else:
            record = self._submit(attempt)
            say.info("submitted Batch job %s (%s) to queue %s", record.job_id, record.job_name, record.job_queue)
        self._watching[attempt.execution_id] = record.job_id
        self._wake[attempt.execution_id] = threading.Event()
        self._owned.setdefault(attempt.flow_run_id, set()).add(attempt.execution_id)
        forget = attempt.cancel.on_cancel(lambda: self._stop_cancelled(attempt.execution_id))
        try:
            outcome = self._wait(record, attempt, on_line, say)
        finally:
            forget()
            self._watching.pop(attempt.execution_id, None)
            self._wake.pop(attempt.execution_id, None)
            self._owned.get(attempt.flow_run_id, set()).discard(attempt.execution_id)
        self._delete_record(attempt.execution_id)
        return outcome

    def stop(self, flow_run_id: str, *, started_elsewhere: bool = True) -> int:
        owned = self._owned.get(flow_run_id) or {flow_run_id}
        stopped = sum(self._stop_job(owned_id, started_elsewhere) for owned_id in list(owned))
        return stopped + self._stop_arrays(flow_run_id)

    def _stop_arrays(self, flow_run_id: str) -> int:
        """Terminate the array jobs of a run, which on AWS terminates their children, and forget the children that
        nothing waits on yet: their runs are over."""
        stopped = 0
        for array_job_id, children in self._arrays.pop(flow_run_id, {}).items():
            try:
                self.batch.terminate_job(jobId=array_job_id, reason=f"cancelled from Prefect: flow run {flow_run_id}")
                stopped += 1
            except (ClientError, BotoCoreError) as err:
                logger.warning("stopping Batch array job %s failed: %s", array_job_id, err)
            for execution_id in children:
                if execution_id not in self._watching:
                    self._delete_record(execution_id)
        return stopped

    def _stop_cancelled(self, execution_id: str) -> None:
        """A cancel that came while the job was being submitted found nothing to stop: stop it now."""
        if execution_id not in self._stopped:
            self._stop_job(execution_id, started_elsewhere=False)
        if execution_id in self._wake:
            self._wake[execution_id].set()

    def _stop_job(self, execution_id: str, started_elsewhere: bool) -> int:
        job_id = self._watching.get(execution_id)
        if job_id is None and started_elsewhere:
            record = self._read_record(execution_id)
            job_id = record.job_id if record else None
        if job_id is None:
            return 0
        job = self._describe(job_id)
        if job is None or job["status"] in FINISHED:
            return 0
        reason = f"cancelled from Prefect: flow run {execution_id} was cancelled"
        try:
            if job["status"] in NOT_STARTED:
                self.batch.cancel_job(jobId=job_id, reason=reason)
                self._stopped[execution_id] = f"cancelled Batch job {job_id} before it started ({job['status']})"
            else:
                self.batch.terminate_job(jobId=job_id, reason=reason)
                self._stopped[execution_id] = f"terminated Batch job {job_id} ({job['status']})"
        except (ClientError, BotoCoreError) as err:
            logger.warning("stopping Batch job %s failed: %s", job_id, err)
            return 0
        if execution_id in self._wake:
            self._wake[execution_id].set()
        return 1

    def orphans(self, is_dead: Callable[[str], bool], is_final: Callable[[str], bool]) -> list[Orphan]:
        """Executions whose waiting process died while their job went on: running them again re-attaches."""
        found = []
        for record in self._records():
            if not is_dead(record.runner_id):
                continue
            job = self._describe(record.job_id)
            status = job["status"] if job else "gone"
            flow_run_id = record.flow_run_id or record.execution_id
            found.append(
                Orphan(
                    execution_id=flow_run_id,
                    what=f"the process waiting on it died; Batch job {record.job_id} is {status}",
                    resumable=job is not None and not is_final(flow_run_id),
                )
            )
        return found

    def _submit(self, attempt: Attempt) -> JobRecord:
        task = attempt.task
        job_name = f"granary-{task.name[:60]}-{attempt.execution_id}"
        options = self._job_options(attempt, job_name, attempt.invocation.environment, attempt.invocation.parameters)
        self.store.clear_outputs(task.name, attempt.execution_id)  # what an earlier attempt left
        job_id = self._submit_job(options)
        record = self._record_of(attempt, job_id, job_name)
        try:
            self._write_record(record)
        except StorageError:
            # A job nobody could find again after a crash must not run on: it would be submitted twice.
            self.batch.terminate_job(jobId=job_id, reason="granary could not record the job id; not waiting on it")
            raise
        return record

    def submits_together(self, task: TaskDefinition) -> bool:
        """A task whose job reads its item by `AWS_BATCH_JOB_ARRAY_INDEX` (`array: true`)."""
        return task.runtime.batch is not None and task.runtime.batch.array

    def submit_together(self, attempts: list[Attempt]) -> str | None:
        """The first attempts of a mapped pipeline step's items as one array job: child i reads its environment, the
        one a job of its own would get, as item i of `$GRANARY_ITEMS_URI`. Each item's record names its child, so
        that `run` waits on it as on a job of its own; a retry is a job of its own."""
        task = attempts[0].task
        if not self.submits_together(task) or len(attempts) < 2:
            return None
        self._check_store(task)
        array_id = uuid.uuid4().hex
        items = {"items": [{"environment": attempt.invocation.environment} for attempt in attempts]}
        items_uri = self.store.write_json(layout.batch_array_items(array_id), items)
        job_name = f"granary-{task.name[:60]}-{array_id}"
        common = {"GRANARY_TASK": task.name, "GRANARY_ITEMS_URI": items_uri}
        options = self._job_options(attempts[0], job_name, common, {})
        options["arrayProperties"] = {"size": len(attempts)}
        options["tags"][LABEL_EXECUTION] = attempts[0].flow_run_id
        with ThreadPoolExecutor(16, "granary-array") as pool:
            list(pool.map(lambda attempt: self.store.clear_outputs(task.name, attempt.execution_id), attempts))
            job_id = self._submit_job(options)
            records = [
                self._record_of(attempt, f"{job_id}:{index}", job_name, array_job_id=job_id)
                for index, attempt in enumerate(attempts)
            ]
            try:
                list(pool.map(self._write_record, records))
            except StorageError:
                self.batch.terminate_job(
                    jobId=job_id, reason="granary could not record the job ids; not waiting on them"
                )
                raise
        children = [attempt.execution_id for attempt in attempts]
        self._arrays.setdefault(attempts[0].flow_run_id, {})[job_id] = children
        return job_id

    def _write_record(self, record: JobRecord) -> None:
        self.store.write_json(layout.batch_record(record.execution_id), record.model_dump(mode="json"))

    def _check_store(self, task: TaskDefinition) -> None:
        if not self.store.is_s3:
            raise RuntimeUnavailable(
                f"task {task.name!r} runs on AWS Batch, whose jobs write to S3 themselves: set the results "
                "root to s3://... (GRANARY_RESULTS_URI, or an S3Bucket block named in GRANARY_RESULTS_BLOCK), "
                f"not {self.store.root}"
            )

    def _job_options(
        self, attempt: Attempt, job_name: str, environment: dict[str, str], parameters: dict[str, str]
    ) -> dict[str, Any]:
        task = attempt.task
        spec = task.runtime.batch
        if spec is None:
            raise RuntimeUnavailable("BatchRuntime runs Batch tasks only")
        self._check_store(task)
        options: dict[str, Any] = {
            "jobName": job_name,
            "jobQueue": spec.jobQueue,
            "jobDefinition": spec.jobDefinition,
            "parameters": parameters,  # job definitions written for Granary: `Ref::name` in the command
            "containerOverrides": {
                "environment": [{"name": k, "value": v} for k, v in environment.items()],
                "resourceRequirements": _resource_requirements(task.resources),
            },
            "tags": {
                LABEL_EXECUTION: attempt.execution_id,
                LABEL_TASK: task.name,
                LABEL_RUNNER: attempt.runner_id,
                LABEL_ATTEMPT: str(attempt.number),
            },
            "propagateTags": True,
        }
        if attempt.invocation.command is not None:
            options["containerOverrides"]["command"] = attempt.invocation.command
        if task.timeout:
            options["timeout"] = {"attemptDurationSeconds": max(MIN_TIMEOUT, int(task.timeout))}
        return options

    def _submit_job(self, options: dict[str, Any]) -> str:
        doing = f"submitting to job queue {options['jobQueue']!r} with job definition {options['jobDefinition']!r}"
        try:
            return str(self.batch.submit_job(**options)["jobId"])
        except (ClientError, BotoCoreError) as err:
            raise RuntimeUnavailable(aws.describe_error(err, doing, aws.endpoint_of(self.batch))) from err

    @staticmethod
    def _record_of(attempt: Attempt, job_id: str, job_name: str, array_job_id: str = "") -> JobRecord:
        spec = attempt.task.runtime.batch
        assert spec is not None
        return JobRecord(
            execution_id=attempt.execution_id,
            task=attempt.task.name,
            job_id=job_id,
            job_name=job_name,
            job_queue=spec.jobQueue,
            attempt=attempt.number,
            runner_id=attempt.runner_id,
            submitted=datetime.now(timezone.utc),
            flow_run_id=attempt.flow_run_id,
            array_job_id=array_job_id,
        )

    def _wait(self, record: JobRecord, attempt: Attempt, on_line: Callable[[str], None], say: Any) -> AttemptOutcome:
        tail: deque[str] = deque(maxlen=LOG_TAIL)
        cursor = _LogCursor(self.logs, self.polling.log_page)
        interval = self.polling.minimum
        status = None
        failures = 0
        while True:
            try:
                job = self._describe(record.job_id)
                failures = 0
            except RuntimeUnavailable as err:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                say.warning("%s; trying again", err)
                self._wake[attempt.execution_id].wait(interval)
                continue
            if job is None:
                return AttemptOutcome(exit_code=None, killed_reason=f"Batch job {record.job_id} no longer exists")
            if job["status"] != status:
                status = job["status"]
                reason = f": {job['statusReason']}" if job.get("statusReason") else ""
                say.info("Batch job %s is %s%s", record.job_id, status, reason)
                interval = self.polling.minimum
            cursor.stream = _log_stream(job, record)
            if self._relay(cursor, on_line, tail):
                interval = self.polling.minimum
            if status in FINISHED:
                break
            if self._wake[attempt.execution_id].wait(interval):  # stopped: look again soon, then at the usual pace
                self._wake[attempt.execution_id].clear()
            interval = min(interval * self.polling.factor, self.polling.maximum)
        if _last_lines_matter(job, attempt, tail):
            self._wake[attempt.execution_id].wait(self.polling.settle)
            self._relay(cursor, on_line, tail)
        if attempt.execution_id in self._stopped:
            say.info(self._stopped.pop(attempt.execution_id))
        return self._outcome(job, record, attempt, tail)

    @staticmethod
    def _relay(cursor: _LogCursor, on_line: Callable[[str], None], tail: deque[str]) -> bool:
        lines = cursor.read()
        for line in lines:
            tail.append(line)
            on_line(line)
        return bool(lines)

    def _outcome(self, job: dict[str, Any], record: JobRecord, attempt: Attempt, tail: deque[str]) -> AttemptOutcome:
        last_line = tail[-1] if tail else None
        if job["status"] == "SUCCEEDED":
            return AttemptOutcome(exit_code=0, last_stdout_line=last_line, log_tail=list(tail))
        attempts = job.get("attempts") or []
        last_attempt = attempts[-1] if attempts else {}
        reason = (
            job.get("statusReason")
            or last_attempt.get("statusReason")
            or last_attempt.get("container", {}).get("reason")
        )
        exit_code = self._exit_code(job, last_attempt, record)
        detail = f"Batch job {record.job_id} FAILED after {max(len(attempts), 1)} attempt(s)"
        detail += f": {reason}" if reason else ""
        killed = None
        if reason and LOST_HOST.search(reason):
            killed = f"the Batch job lost its host ({reason})"
        elif (reason and TIMED_OUT.search(reason)) or (reason is None and _ran_for(job) >= _timeout(attempt)):
            killed = f"killed: timed out after {_timeout(attempt):g} s (Batch attemptDurationSeconds)"
        return AttemptOutcome(
            exit_code=exit_code, killed_reason=killed, detail=detail, last_stdout_line=last_line, log_tail=list(tail)
        )

    def _exit_code(self, job: dict[str, Any], last_attempt: dict[str, Any], record: JobRecord) -> int | None:
        for container in (job.get("container") or {}, last_attempt.get("container") or {}):
            if container.get("exitCode") is not None:
                return int(container["exitCode"])
        # Some Batch stand-ins only say the exit code in ListJobs' summaries.
        try:
            summaries = self.batch.list_jobs(
                jobQueue=record.job_queue, filters=[{"name": "JOB_NAME", "values": [record.job_name]}]
            )["jobSummaryList"]
        except (ClientError, BotoCoreError):
            return None
        for summary in summaries:
            if summary["jobId"] == record.job_id and summary.get("container", {}).get("exitCode") is not None:
                return int(summary["container"]["exitCode"])
        return None

    def _describe(self, job_id: str) -> dict[str, Any] | None:
        try:
            jobs = self.batch.describe_jobs(jobs=[job_id])["jobs"]
        except (ClientError, BotoCoreError) as err:
            doing = f"reading Batch job {job_id}"
            raise RuntimeUnavailable(aws.describe_error(err, doing, aws.endpoint_of(self.batch))) from err
        return jobs[0] if jobs else None

    def _read_record(self, execution_id: str) -> JobRecord | None:
        try:
            return JobRecord.model_validate(self.store.read_json(layout.batch_record(execution_id)))
        except FileNotFoundError:
            return None

    def _delete_record(self, execution_id: str) -> None:
        self.store.remove(layout.batch_record(execution_id))

    def _records(self) -> list[JobRecord]:
        return [JobRecord.model_validate(document) for document in self.store.read_all_json(layout.BATCH_RECORDS)]


class _LogCursor:
    """Reads a CloudWatch stream forward from where it left off: every line once, in order, across pages."""

    def __init__(self, logs: Any, page: int):
        self.logs = logs
        self.page = page
        self._stream: str | None = None
        self._token: str | None = None

    @property
    def stream(self) -> str | None:
        return self._stream

    @stream.setter
    def stream(self, name: str | None) -> None:
        if name != self._stream:
            self._stream, self._token = name, None

    def read(self) -> list[str]:
        if self.stream is None:
            return []
        lines: list[str] = []
        while True:
            options: dict[str, Any] = {
                "logGroupName": LOG_GROUP,
                "logStreamName": self.stream,
                "startFromHead": True,
                "limit": self.page,
            }
            if self._token:
                options["nextToken"] = self._token
            try:
                page = self.logs.get_log_events(**options)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return lines  # the stream appears once the job runs
                raise
            lines += [str(event["message"])[:MAX_LINE] for event in page["events"]]
            token = page.get("nextForwardToken")
            if token == self._token or not page["events"]:
                self._token = token or self._token
                return lines
            self._token = token


def _last_lines_matter(job: dict[str, Any], attempt: Attempt, tail: deque[str]) -> bool:
    """Whether to wait for lines CloudWatch may show late: a failure's last lines explain it, a task that reports
    values does so on its last line, and a job that ran but showed no line yet may only be late. A success whose
    lines were read, of a task whose results are files, has nothing waiting on them."""
    return job["status"] != BatchStatus.SUCCEEDED or bool(attempt.task.outputs.values) or not tail


def _log_stream(job: dict[str, Any], record: JobRecord) -> str | None:
    """The stream Batch names once the job runs; before it says, the name its log driver gives by default."""
    named = (job.get("container") or {}).get("logStreamName")
    if named:
        return str(named)
    if job["status"] in NOT_STARTED:
        return None
    definition = job.get("jobDefinition", "").rsplit("/", 1)[-1].split(":")[0]
    return f"{definition}/default/{record.job_id}"


def _resource_requirements(resources: Any) -> list[dict[str, str]]:
    requirements = [
        {"type": "VCPU", "value": f"{resources.cpus:g}"},
        {"type": "MEMORY", "value": str(resources.memory)},
    ]
    if resources.gpus:
        requirements.append({"type": "GPU", "value": str(resources.gpus)})
    return requirements


def _ran_for(job: dict[str, Any]) -> float:
    if not job.get("startedAt") or not job.get("stoppedAt"):
        return 0.0
    return (job["stoppedAt"] - job["startedAt"]) / 1000


def _timeout(attempt: Attempt) -> float:
    return max(MIN_TIMEOUT, attempt.task.timeout) if attempt.task.timeout else float("inf")
