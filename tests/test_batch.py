"""The AWS Batch runtime and S3 results, against moto in server mode: its Batch jobs are real containers on the local
Docker engine, its S3 and CloudWatch Logs are real HTTP services. Runs go through a runner like `granary serve`'s."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from helpers import (
    BUCKET,
    QUEUE,
    ROOT,
    SAMPLE_TIFF,
    artifacts_of,
    cancel_and_time,
    containers_of,
    execute,
    granary_serve,
    logs_of,
    read_until,
    running_moto,
    start,
    stop_process,
    wait_final,
)

BATCH_TASKS = ROOT / "tests" / "batch" / "tasks"
EXAMPLES = ROOT / "examples" / "batch"


def jobs_of(aws: SimpleNamespace, task: str, execution_id: Any) -> list[dict[str, Any]]:
    """Every Batch job submitted on the queue for an execution, oldest first."""
    summaries = aws.batch.list_jobs(
        jobQueue=QUEUE, filters=[{"name": "JOB_NAME", "values": [f"granary-{task}-{execution_id}"]}]
    )["jobSummaryList"]
    if not summaries:
        return []
    jobs = aws.batch.describe_jobs(jobs=[s["jobId"] for s in summaries])["jobs"]
    return sorted(jobs, key=lambda job: job["createdAt"])


def wait_for_job(aws: SimpleNamespace, task: str, execution_id: Any, status: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = jobs_of(aws, task, execution_id)
        if jobs and jobs[-1]["status"] == status:
            return jobs[-1]
        time.sleep(0.2)
    statuses = [(job["jobId"], job["status"]) for job in jobs_of(aws, task, execution_id)]
    raise AssertionError(f"no {status} job for {execution_id} after {timeout} s: {statuses}")


def read_s3(aws: SimpleNamespace, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_batch_execution_delivers_the_contract_and_collects_results_from_s3(client, aws, batch_runner, s3_api):
    flow_run = execute(client, "batch-probe", label="ada", lines=2, write=["a.txt"], sidecar=True)
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    execution = f"s3://{BUCKET}/runs/batch-probe/{flow_run.id}"
    by_title = {a["title"]: a for a in document["results"]}
    assert by_title["a.txt"]["href"] == f"{execution}/a.txt"
    assert read_s3(aws, by_title["a.txt"]["href"]) == b"a.txt from attempt 1\n"
    assert by_title["a.txt.metadata.json"]["roles"] == ["metadata"]

    seen = json.loads(read_s3(aws, f"{execution}/environment.json"))
    assert json.loads(seen["GRANARY_ARGUMENTS"])["label"] == "ada"
    assert (seen["LABEL"], seen["LINES"], seen["OUTPUT_URI"], seen["OUTPUT_DIR"]) == ("ada", "2", execution, None)
    item = json.loads(read_s3(aws, document["stac_item"]))
    assert item["geometry"] == {"type": "Point", "coordinates": [13.4, 52.5]}

    [job] = jobs_of(aws, "batch-probe", flow_run.id)
    assert job["status"] == "SUCCEEDED"
    assert job["parameters"]["label"] == "ada"  # the job definition's Ref::label
    assert job["tags"]["granary.execution-id"] == str(flow_run.id) and job["tags"]["granary.task"] == "batch-probe"
    assert job["timeout"] == {"attemptDurationSeconds": 600}
    logs = logs_of(client, flow_run.id)
    assert "label=ada attempt=1" in logs  # Ref::label reached the command line
    assert [line for line in logs if line.startswith("line ")] == ["line 1", "line 2"]
    transitions = [line.split(" is ")[1] for line in logs if line.startswith(f"Batch job {job['jobId']} is ")]
    assert transitions[-1] == "SUCCEEDED" and len(transitions) == len(set(transitions))  # each said once

    [report] = [a.data for a in artifacts_of(client, flow_run.id) if a.key == "batch-probe-results"]
    [url] = re.findall(r"\((http[^)]+/a\.txt\?[^)]+)\)", report)
    assert url.startswith(f"{s3_api.url}/jobs/{flow_run.id}/outputs/a.txt?expires=")  # the API's, signed for a week
    opened = httpx.get(url, timeout=10, follow_redirects=True)  # no credentials needed
    assert opened.content == b"a.txt from attempt 1\n" and "Expires=" in str(opened.url)  # a fresh presigned link


def test_thousands_of_log_lines_reach_the_run_once_each_and_in_order(client, aws, batch_runner):
    flow_run = execute(client, "batch-probe", lines=3000)
    assert flow_run.state.is_completed(), flow_run.state.message
    # Prefect's log worker ships the 3,000 lines in batches that sometimes land late (seen: none 3 s after the end).
    deadline = time.monotonic() + 60
    while True:
        lines = [line for line in logs_of(client, flow_run.id, settle=1) if line.startswith("line ")]
        if len(lines) >= 3000 or time.monotonic() > deadline:
            break
    assert lines == [f"line {n}" for n in range(1, 3001)]


def test_log_lines_stream_into_the_run_while_the_job_runs(client, aws, batch_runner):
    flow_run = start(client, "batch-probe", sleep=30)
    job = wait_for_job(aws, "batch-probe", flow_run.id, "RUNNING")
    # As Batch's awslogs driver would: moto itself only writes a job's stream after its container exits.
    stream = f"granary-probe/default/{job['jobId']}"
    with contextlib.suppress(aws.logs.exceptions.ResourceAlreadyExistsException):
        aws.logs.create_log_group(logGroupName="/aws/batch/job")
    aws.logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": f"live {i}"} for i in range(1, 4)]
    aws.logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=events)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live = [line for line in logs_of(client, flow_run.id, settle=0.5) if line.startswith("live ")]
        if len(live) >= 3:
            break
    assert live == ["live 1", "live 2", "live 3"]
    assert not client.read_flow_run(flow_run.id).state.is_final()  # seen while the job still ran
    flow_run = wait_final(client, flow_run.id)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert [line for line in logs_of(client, flow_run.id) if line.startswith("live ")] == live  # once each


def test_a_failed_job_reports_its_exit_code_reason_and_attempts_and_a_data_error_is_not_retried(
    client, aws, batch_runner
):
    flow_run = execute(client, "batch-probe", exit=3)
    assert flow_run.state.is_failed()
    [job] = jobs_of(aws, "batch-probe", flow_run.id)
    assert job["status"] == "FAILED"
    message = flow_run.state.message
    assert "exit code 3 (bad-data, a data error): the input cannot be read" in message
    assert f"Batch job {job['jobId']} FAILED after 1 attempt(s)" in message


def test_a_failed_jobs_last_line_that_reaches_cloudwatch_late_still_explains_the_failure(client, aws, batch_runner):
    flow_run = start(client, "batch-probe", sleep=3, exit=3)
    job = wait_for_job(aws, "batch-probe", flow_run.id, "FAILED")
    # As CloudWatch may: a line of the job that shows only after Batch said the job ended.
    stream = f"granary-probe/default/{job['jobId']}"
    late = [{"timestamp": int(time.time() * 1000), "message": "late: the scene has no red band"}]
    aws.logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=late)
    flow_run = wait_final(client, flow_run.id)
    assert flow_run.state.is_failed()
    assert "late: the scene has no red band" in logs_of(client, flow_run.id)
    summaries = [a.data for a in artifacts_of(client, flow_run.id) if a.type == "markdown"]
    assert any("late: the scene has no red band" in summary for summary in summaries)  # the failure's last lines


def test_a_lost_host_is_a_system_error_and_the_retry_submits_a_new_job(client, aws, batch_runner):
    flow_run = start(client, "batch-probe", sleepFirstAttempt=60, write=["a.txt"])
    first = wait_for_job(aws, "batch-probe", flow_run.id, "RUNNING")
    aws.batch.terminate_job(jobId=first["jobId"], reason="Host EC2 (instance i-0a1b2c3d) terminated.")
    flow_run = wait_final(client, flow_run.id)
    assert flow_run.state.is_completed(), flow_run.state.message
    jobs = jobs_of(aws, "batch-probe", flow_run.id)
    assert [j["status"] for j in jobs] == ["FAILED", "SUCCEEDED"]
    assert jobs[0]["statusReason"] == "Host EC2 (instance i-0a1b2c3d) terminated."
    [asset] = [a for a in flow_run.state.result()["results"] if a["title"] == "a.txt"]
    assert read_s3(aws, asset["href"]) == b"a.txt from attempt 2\n"
    assert any("lost its host" in line for line in logs_of(client, flow_run.id))


def cancel(client: Any, flow_run_id: Any) -> None:
    from prefect.states import Cancelling

    client.set_flow_run_state(flow_run_id, Cancelling(), force=True)


@pytest.fixture
def slow_batch_transitions(aws: SimpleNamespace) -> Iterator[None]:
    """moto moves a job from one status to the next every 3 s: it stays SUBMITTED long enough to be cancelled."""
    transition = {"model_name": "batch::job", "transition": {"progression": "time", "seconds": 3}}
    httpx.post(f"{aws.endpoint}/moto-api/state-manager/set-transition", json=transition).raise_for_status()
    yield
    httpx.post(f"{aws.endpoint}/moto-api/state-manager/unset-transition", json={"model_name": "batch::job"})


def test_cancelling_before_the_job_starts_cancels_it(client, aws, batch_runner, slow_batch_transitions):
    flow_run = start(client, "batch-probe", sleep=30)
    job = wait_for_job(aws, "batch-probe", flow_run.id, "SUBMITTED")
    cancel(client, flow_run.id)
    flow_run = wait_final(client, flow_run.id, timeout=60)
    assert flow_run.state.is_cancelled()
    [job] = jobs_of(aws, "batch-probe", flow_run.id)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == f"cancelled from Prefect: flow run {flow_run.id} was cancelled"
    said = f"cancelled Batch job {job['jobId']} before it started"
    assert any(line.startswith(said) for line in logs_of(client, flow_run.id))


@pytest.mark.parametrize(
    ("task", "named"),
    [
        ("batch-unknown-queue", "Job queue no-such-queue does not exist"),
        ("batch-unknown-definition", "Job definition no-such-definition does not exist"),
    ],
)
def test_an_unknown_queue_or_job_definition_fails_at_submission_and_leaves_no_job(
    client, aws, batch_runner, task, named
):
    flow_run = execute(client, task)
    assert flow_run.state.is_failed()
    assert named in flow_run.state.message
    assert jobs_of(aws, task, flow_run.id) == []


def test_invalid_arguments_submit_no_job(client, aws, batch_runner):
    flow_run = execute(client, "batch-probe", server_checks=False, lines=-1)
    assert flow_run.state.is_failed()
    assert "lines: -1 is less than the minimum of 0" in flow_run.state.message
    assert jobs_of(aws, "batch-probe", flow_run.id) == []


def test_ndvi_runs_as_a_batch_job_reading_its_scene_from_s3(client, aws, batch_runner):
    aws.s3.upload_file(str(SAMPLE_TIFF), BUCKET, "inputs/scene.tif")
    scene = f"s3://{BUCKET}/inputs/scene.tif"
    flow_run = execute(client, "ndvi-batch", redBand=3, nirBand=4, tiffLocation=scene)
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert document["arguments"]["tiffLocation"] == scene
    by_title = {a["title"]: a for a in document["results"]}
    assert read_s3(aws, by_title["ndvi.tif"]["href"])[:4] in (b"II*\x00", b"MM\x00*")
    item = json.loads(read_s3(aws, document["stac_item"]))
    assert item["geometry"]["type"] == "Polygon"
    [[west, south], *_] = item["geometry"]["coordinates"][0]
    assert 14 < west < 16 and 40 < south < 60  # the scene's UTM 33N footprint, in degrees
    assert "computing NDVI" in " ".join(logs_of(client, flow_run.id))


def test_docker_outputs_go_to_s3_in_parallel_multipart_uploads(client, aws, batch_runner, monkeypatch):

    monkeypatch.setenv("GRANARY_MULTIPART_CHUNK_MIB", "5")  # S3's smallest part
    flow_run = execute(client, "s3-writer", sizes=[12, 1])
    assert flow_run.state.is_completed(), flow_run.state.message
    prefix = f"runs/s3-writer/{flow_run.id}"
    big = aws.s3.head_object(Bucket=BUCKET, Key=f"{prefix}/part-1.bin")
    small = aws.s3.head_object(Bucket=BUCKET, Key=f"{prefix}/part-2.bin")
    assert big["ContentLength"] == 12 * 2**20 and big["ETag"].strip('"').endswith("-3")  # 3 parts of 5, 5, 2 MiB
    assert small["ContentLength"] == 2**20 and "-" not in small["ETag"]
    [stored] = [line for line in logs_of(client, flow_run.id) if line.startswith("outputs: ")]
    assert re.fullmatch(r"outputs: 2 file\(s\), 13\.0 MiB, collected in [0-9]+\.[0-9] s", stored), stored


def test_cancelling_while_outputs_are_stored_ends_the_run_at_once(client, aws, batch_runner, docker_runtime):
    """800 MiB take seconds to reach moto: a cancel while they go ends the run at once, and what was stored goes."""
    from granary_flows.runtimes.base import LABEL_FLOW_RUN

    since = time.time()
    flow_run = start(client, "s3-writer", sizes=[400, 400])
    deadline = time.monotonic() + 180
    while not containers_of(docker_runtime, flow_run.id, since):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    filters = {"label": f"{LABEL_FLOW_RUN}={flow_run.id}", "status": "running"}
    while docker_runtime.client.containers.list(filters=filters):  # it writes; then the runner stores
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    assert client.read_flow_run(flow_run.id).state.is_running()  # still storing
    assert cancel_and_time(client, flow_run.id) < 5  # the upload or download would take far longer
    prefix = f"runs/s3-writer/{flow_run.id}/"
    deadline = time.monotonic() + 120  # the upload in flight ends, then removes what it stored
    while aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount"):
        assert time.monotonic() < deadline, "the cancelled execution's outputs stayed"
        time.sleep(1)


def test_a_failed_upload_fails_the_execution_and_keeps_the_outputs(aws, docker_runtime, tmp_path, monkeypatch):
    from granary_flows.flows import flow_for
    from granary_flows.loading import find_definition
    from granary_flows.store import ResultsStore

    monkeypatch.setenv("GRANARY_HOME", str(tmp_path))
    aws.s3.create_bucket(Bucket="granary-vanishing")
    writer = flow_for(find_definition("s3-writer", [BATCH_TASKS]), ResultsStore("s3://granary-vanishing/runs"))
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(state=writer(sizes=[1], sleep=3, return_state=True)))
    thread.start()
    deadline = time.monotonic() + 120
    while not docker_runtime.client.containers.list(filters={"label": "granary.task=s3-writer"}):
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.1)
    aws.s3.delete_bucket(Bucket="granary-vanishing")  # while the container runs: its outputs have nowhere to go
    thread.join(timeout=180)
    state = outcome["state"]
    assert state.is_failed()
    [execution] = [p.name for p in (tmp_path / "unsent" / "s3-writer").iterdir()]
    kept = tmp_path / "unsent" / "s3-writer" / execution
    assert f"uploading outputs to s3://granary-vanishing/runs/s3-writer/{execution} failed" in state.message
    assert f"the outputs are kept in {kept}" in state.message
    assert (kept / "part-1.bin").stat().st_size == 2**20


def serve_batch_tasks(folder: Any) -> subprocess.Popen:
    """`granary serve` in a process of its own, on this session's server, with the S3 results root."""
    results = f"s3://{BUCKET}/runs"
    return granary_serve("--deployments", str(folder), GRANARY_RESULTS_URI=results, GRANARY_BATCH_POLL_MAX="1")


def test_a_restarted_serve_re_attaches_to_the_job_its_dead_predecessor_waited_on(client, aws):
    first = serve_batch_tasks(ROOT / "tests" / "batch" / "crash")
    second = None
    try:
        read_until(first, "waiting for runs", timeout=180)
        flow_run = start(client, "batch-reattach", sleep=6, write=["a.txt"])
        job = wait_for_job(aws, "batch-reattach", flow_run.id, "RUNNING")
        first.kill()  # mid-wait: the job runs on without anyone watching it
        first.wait(timeout=10)

        second = serve_batch_tasks(ROOT / "tests" / "batch" / "crash")
        output = read_until(second, "waiting for runs", timeout=180)
        # The job may have ended by now (a loaded machine starts serve slowly): re-attaching collects it all the same.
        said = f"rescheduled {flow_run.id}: the process waiting on it died; Batch job {job['jobId']} is "
        assert said in output

        flow_run = wait_final(client, flow_run.id, timeout=180)  # no retry asked for: the new serve picks it up
        assert flow_run.state.is_completed(), flow_run.state.message
        assert [j["jobId"] for j in jobs_of(aws, "batch-reattach", flow_run.id)] == [job["jobId"]]  # no second job
        [asset] = [a for a in flow_run.state.result()["results"] if a["title"] == "a.txt"]
        assert read_s3(aws, asset["href"]) == b"a.txt from attempt 1\n"
        said = f"re-attaching to Batch job {job['jobId']}"
        assert any(line.startswith(said) for line in logs_of(client, flow_run.id))
    finally:
        for process in (first, second):
            stop_process(process)


@pytest.fixture(scope="module")
def checking_moto() -> Iterator[str]:
    """A second moto that checks credentials: it refuses every access key it did not issue."""
    from granary_flows.server import free_port

    with running_moto(free_port(), INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        yield endpoint


def credentials_block(name: str, endpoint: str) -> str:
    from prefect_aws import AwsCredentials

    AwsCredentials(
        aws_access_key_id="AKIAGRANARYWRONG",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint},
    ).save(name, overwrite=True)
    return name


@pytest.mark.parametrize("case", ["wrong credentials", "unreachable endpoint"])
def test_bad_aws_credentials_or_endpoint_fail_at_submission_naming_them(client, aws, batch_runner, checking_moto, case):
    from granary_flows.definition import RuntimeKind
    from granary_flows.flows import flow_for
    from granary_flows.loading import find_definition
    from granary_flows.runtimes.batch import BatchRuntime
    from granary_flows.server import free_port

    endpoint = checking_moto if case == "wrong credentials" else f"http://127.0.0.1:{free_port()}"
    block = credentials_block(f"granary-{case.replace(' ', '-')}", endpoint)
    probe = flow_for(
        find_definition("batch-probe", [BATCH_TASKS]),
        batch_runner.store,
        {RuntimeKind.BATCH: BatchRuntime(batch_runner.store, credentials_block=block)},
    )
    started = time.monotonic()
    state = probe(return_state=True)
    assert state.is_failed()
    if case == "wrong credentials":
        said = "submitting to job queue 'granary-queue' with job definition 'granary-probe' failed: AWS refused"
        assert f"{said} the credentials at {endpoint}" in state.message
    else:
        assert f"failed: no AWS endpoint answers at {endpoint}" in state.message
    assert time.monotonic() - started < 30
    flow_run_id = state.state_details.flow_run_id
    assert jobs_of(aws, "batch-probe", flow_run_id) == []


def test_an_s3_bucket_block_is_the_results_root_with_its_own_credentials(client, aws, monkeypatch):
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    from granary_flows.errors import StorageError
    from granary_flows.flows import flow_for
    from granary_flows.loading import find_definition
    from granary_flows.store import ResultsStore

    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": aws.endpoint},
    )
    results = S3Bucket(bucket_name=BUCKET, bucket_folder="from-block", credentials=credentials)
    results.save("granary-results", overwrite=True)
    monkeypatch.setenv("GRANARY_RESULTS_BLOCK", "granary-results")
    store = ResultsStore()
    assert store.root == f"s3://{BUCKET}/from-block"
    state = flow_for(find_definition("hello", [ROOT / "deployments"]), store)(name="block", return_state=True)
    assert state.is_completed(), state.message
    execution = state.state_details.flow_run_id
    assert read_s3(aws, f"s3://{BUCKET}/from-block/hello/{execution}/greeting.txt") == b"Hello, block!\n"

    # The block's endpoint is the one used, not AWS_ENDPOINT_URL's.
    S3Bucket(
        bucket_name=BUCKET,
        credentials=credentials.model_copy(
            update={"aws_client_parameters": AwsClientParameters(endpoint_url="http://127.0.0.1:9")}
        ),
    ).save("granary-results-nowhere", overwrite=True)
    monkeypatch.setenv("GRANARY_RESULTS_BLOCK", "granary-results-nowhere")
    with pytest.raises(StorageError, match=f"the results root s3://{BUCKET} cannot be written"):
        ResultsStore().check_writable()


def test_cancelling_under_prefects_own_worker_terminates_the_job(client, aws, tmp_path):
    from prefect.states import Cancelling
    from typer.testing import CliRunner

    from granary_flows.cli import app

    probe = (BATCH_TASKS / "batch-probe.yaml").read_text()
    (tmp_path / "pooled-probe.yaml").write_text(probe.replace("name: batch-probe", "name: pooled-probe"))
    deployed = CliRunner().invoke(app, ["deploy", "--pool", "granary-batch-pool", "--deployments", str(tmp_path)])
    assert deployed.exit_code == 0, deployed.output
    deployment = client.read_deployment_by_name("pooled-probe/pooled-probe")
    flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"sleep": 600})
    env = os.environ | {"GRANARY_DEPLOYMENTS": str(tmp_path), "GRANARY_RESULTS_URI": f"s3://{BUCKET}/runs"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "granary-batch-pool"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job = wait_for_job(aws, "pooled-probe", flow_run.id, "RUNNING", timeout=240)
        client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
        assert wait_final(client, flow_run.id, timeout=120).state.is_cancelled()
        # The worker kills the flow's process, then runs the flow's cancellation hook, which terminates the job.
        job = wait_for_job(aws, "pooled-probe", flow_run.id, "FAILED", timeout=60)
        assert job["statusReason"] == f"cancelled from Prefect: flow run {flow_run.id} was cancelled"
    finally:
        stop_process(worker)


def test_waiting_reads_the_status_with_backoff_not_in_a_busy_loop(client, aws, batch_runner):
    from granary_flows import aws as granary_aws
    from granary_flows.definition import RuntimeKind
    from granary_flows.flows import flow_for
    from granary_flows.loading import find_definition
    from granary_flows.runtimes.batch import BatchRuntime, Polling

    reads: list[float] = []
    shared = granary_aws.client("batch")  # the client every Batch runtime of this process uses

    def count(**_: Any) -> None:
        reads.append(time.monotonic())

    shared.meta.events.register("before-call.batch.DescribeJobs", count)
    try:
        runtime = BatchRuntime(batch_runner.store, Polling(minimum=1, maximum=4))
        probe = flow_for(
            find_definition("batch-probe", [BATCH_TASKS]), batch_runner.store, {RuntimeKind.BATCH: runtime}
        )
        state = probe(sleep=12, return_state=True)
    finally:
        shared.meta.events.unregister("before-call.batch.DescribeJobs", count)
    assert state.is_completed(), state.message
    gaps = [later - earlier for earlier, later in itertools.pairwise(reads)]
    assert min(gaps) >= 0.9  # never faster than the minimum interval
    assert max(gaps) >= 3  # it backed off while nothing changed
    assert len(reads) <= 9  # about 14 s of waiting: 1 + 1.5 + 2.25 + 3.4 + 4 + 4 ..., not one read a second


@contextlib.contextmanager
def batch_calls(operation: str) -> Iterator[list[dict[str, Any]]]:
    """The `operation` calls this process's Batch client makes meanwhile (every Batch runtime here shares it)."""
    from granary_flows import aws as granary_aws

    calls: list[dict[str, Any]] = []
    shared = granary_aws.client("batch")

    def seen(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    shared.meta.events.register(f"provide-client-params.batch.{operation}", seen)
    try:
        yield calls
    finally:
        shared.meta.events.unregister(f"provide-client-params.batch.{operation}", seen)


def test_a_step_mapped_over_an_array_task_is_one_array_job_whose_children_are_the_items(client, aws, batch_runner):
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    with batch_calls("SubmitJob") as submitted:
        flow_run = execute(client, "batch-map", timeout=180, words=words)
    assert flow_run.state.is_completed(), flow_run.state.message
    [array] = submitted  # one SubmitJob for the five items, not five
    assert array["arrayProperties"] == {"size": 5}
    pipeline = json.loads(read_s3(aws, f"s3://{BUCKET}/runs/batch-map/{flow_run.id}/granary-pipeline.json"))
    executions = pipeline["steps"]["each"]["executions"]
    assert len(set(executions)) == 5
    for word, execution_id in zip(words, executions, strict=True):  # child i did item i, and wrote where item i goes
        stored = read_s3(aws, f"s3://{BUCKET}/runs/batch-probe-array/{execution_id}/{word}.txt")
        assert stored == f"{word}.txt from attempt 1\n".encode()
        document = json.loads(
            read_s3(aws, f"s3://{BUCKET}/runs/batch-probe-array/{execution_id}/granary-execution.json")
        )
        assert {asset["href"].rsplit("/", 1)[-1] for asset in document["results"]} == {
            f"{word}.txt",
            "environment.json",
        }
    assert any("submitted 5 items as Batch array job" in line for line in logs_of(client, flow_run.id))


def test_cancelling_a_mapped_step_terminates_its_array_job_and_every_child(client, aws, batch_runner):
    flow_run = start(client, "batch-map", words=["one", "two", "three"], sleep=120)
    deadline = time.monotonic() + 180
    while not any("as Batch array job" in line for line in logs_of(client, flow_run.id, settle=0.5)):
        assert time.monotonic() < deadline, "no array job was submitted"
    [said] = [line for line in logs_of(client, flow_run.id) if "as Batch array job" in line]
    array_job_id = said.rsplit(" ", 1)[-1]
    children = [f"{array_job_id}:{index}" for index in range(3)]
    deadline = time.monotonic() + 180
    while {job["status"] for job in aws.batch.describe_jobs(jobs=children)["jobs"]} != {"RUNNING"}:
        assert time.monotonic() < deadline, "the children never all ran"
        time.sleep(0.2)
    assert cancel_and_time(client, flow_run.id) < 10
    deadline = time.monotonic() + 60
    while {job["status"] for job in aws.batch.describe_jobs(jobs=children)["jobs"]} != {"FAILED"}:
        assert time.monotonic() < deadline, "a child went on after the cancel"
        time.sleep(0.2)
    records = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/.granary/batch-jobs/").get("Contents", [])
    assert not [r for r in records if flow_run_id_in(aws, r["Key"], flow_run.id)]  # nothing left to re-attach to


def flow_run_id_in(aws: SimpleNamespace, key: str, flow_run_id: Any) -> bool:
    record = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return record.get("flow_run_id") == str(flow_run_id)


def test_a_shared_document_on_s3_changed_by_many_writers_at_once_keeps_every_change(aws):
    """S3's conditional writes (If-Match, If-None-Match) in place of the local folder's file lock: many writers
    adding to one document at once (executions of one task adding their Items to its Collection) lose nothing."""
    from test_store import assert_no_change_lost

    from granary_flows.store import ResultsStore

    assert_no_change_lost(ResultsStore(f"s3://{BUCKET}/shared-{time.time_ns()}"))
