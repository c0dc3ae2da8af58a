"""`granary api` against a real Prefect server and runner: OGC API - Processes (Parts 1 and 2) and Granary's REST API,
each document checked against OGC's own schemas, and real clients (OWSLib, EOEPCA's) driving it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from helpers import SAMPLE_TIFF, bearer, ogc_valid, wait_final

# registrations and synchronous executes wait on the Prefect server, which a loaded two-core CI machine makes slow
http = httpx.Client(timeout=120)


@pytest.fixture(scope="module")
def admin(api) -> dict[str, str]:
    return bearer(api.tokens["admin"])


def get(api, path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    return http.get(f"{api.url}{path}", headers=headers, params=params)


def post(api, path: str, headers: dict[str, str], body: Any, **extra: Any) -> httpx.Response:
    return http.post(f"{api.url}{path}", headers=headers | extra.pop("extra_headers", {}), json=body)


def wait_job(
    api, headers, job_id: str, timeout: float = 90, until: tuple[str, ...] = ("successful", "failed", "dismissed")
) -> dict[str, Any]:
    """The job's status once it is one of `until` (by default, once it ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get(api, f"/jobs/{job_id}", headers).json()
        if status["status"] in until:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end: {status}")


def test_the_landing_page_conformance_and_api_document_are_public_and_valid(api):
    landing = http.get(api.url + "/")
    assert landing.status_code == 200 and not ogc_valid(landing.json(), "landingPage.yaml")
    rels = {link["rel"] for link in landing.json()["links"]}
    assert {"service-desc", "service-doc", "http://www.opengis.net/def/rel/ogc/1.0/conformance"} <= rels
    conformance = http.get(api.url + "/conformance").json()
    assert not ogc_valid(conformance, "confClasses.yaml")
    classes = {c.rsplit("/", 1)[1] for c in conformance["conformsTo"]}
    assert {"core", "ogc-process-description", "json", "html", "oas30", "job-list", "callback", "dismiss"} <= classes
    document = http.get(api.url + "/openapi.json").json()
    assert document["openapi"] == "3.0.3" and "/processes/{process_id}/execution" in document["paths"]
    from openapi_spec_validator import validate

    validate(document)  # a valid OpenAPI 3.0 document
    assert http.get(api.url + "/api.html").status_code == 200


def test_processes_are_listed_with_paging_and_described_from_their_schema(api, admin):
    first = get(api, "/processes", admin, limit=2).json()
    assert not ogc_valid(first, "processList.yaml") and len(first["processes"]) == 2
    [following] = [link["href"] for link in first["links"] if link["rel"] == "next"]
    second = http.get(following, headers=admin).json()
    assert {p["id"] for p in second["processes"]}.isdisjoint({p["id"] for p in first["processes"]})
    ndvi = get(api, "/processes/ndvi", admin).json()
    assert not ogc_valid(ndvi, "process.yaml"), ogc_valid(ndvi, "process.yaml")
    assert ndvi["inputs"]["redBand"]["minOccurs"] == 1 and ndvi["inputs"]["outputName"]["minOccurs"] == 0
    assert ndvi["inputs"]["tiffLocation"]["schema"]["format"] == "uri"
    assert ndvi["outputs"]["ndvi"]["schema"]["contentMediaType"].startswith("image/tiff")
    probe = get(api, "/processes/probe", admin).json()
    assert probe["inputs"]["bands"]["maxOccurs"] == "unbounded" and probe["inputs"]["bands"]["schema"] == {
        "type": "integer"
    }
    missing = get(api, "/processes/nope", admin)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/no-such-process")


def test_a_synchronous_execute_answers_with_the_results_document_or_raw(api, admin):
    answered = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "sync"}})
    assert answered.status_code == 200, answered.text
    document = answered.json()
    assert not ogc_valid(document, "results.yaml")
    link = document["greeting"]
    assert link["type"] == "text/plain" and http.get(link["href"], headers=admin).text == "Hello, sync!\n"
    by_value = post(
        api, "/processes/hello/execution", admin,
        {"inputs": {"name": "value"}, "outputs": {"greeting": {"transmissionMode": "value"}}},
    ).json()  # fmt: skip
    assert by_value["greeting"] == {"value": "Hello, value!\n", "mediaType": "text/plain"}
    raw = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "raw"}, "response": "raw",
               "outputs": {"greeting": {"transmissionMode": "value"}}})  # fmt: skip
    assert (
        raw.status_code == 200 and raw.text == "Hello, raw!\n" and raw.headers["content-type"].startswith("text/plain")
    )


@pytest.mark.quick
def test_an_asynchronous_execute_is_accepted_with_its_location_and_its_job_reaches_its_results(api, admin):
    answered = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "later", "sleep": 1}},
                    extra_headers={"Prefer": "respond-async"})  # fmt: skip
    assert answered.status_code == 201 and answered.headers["Preference-Applied"] == "respond-async"
    accepted = answered.json()
    assert not ogc_valid(accepted, "statusInfo.yaml") and accepted["status"] == "accepted"
    assert answered.headers["Location"] == f"{api.url}/jobs/{accepted['jobID']}"
    not_ready = get(api, f"/jobs/{accepted['jobID']}/results", admin)
    assert not_ready.status_code == 404 and not_ready.json()["type"].endswith("/result-not-ready")
    final = wait_job(api, admin, accepted["jobID"])
    assert final["status"] == "successful" and final["progress"] == 100 and not ogc_valid(final, "statusInfo.yaml")
    results = get(api, f"/jobs/{accepted['jobID']}/results", admin).json()
    assert http.get(results["greeting"]["href"], headers=admin).text == "Hello, later!\n"


def test_invalid_inputs_are_refused_naming_every_violation_and_nothing_runs(api, admin, client):
    before = client.count_flow_runs()
    refused = post(api, "/processes/ndvi/execution", admin,
                   {"inputs": {"redBand": 0, "tiffLocation": "not a uri", "color": "red"}})  # fmt: skip
    assert refused.status_code == 400 and not ogc_valid(refused.json(), "exception.yaml")
    detail = refused.json()["detail"]
    for said in ("unknown argument 'color'", "'nirBand' is a required property", "0 is less than the minimum of 1",
                 "'not a uri' is not a 'uri'"):  # fmt: skip
        assert said in detail
    link_for_a_number = post(api, "/processes/ndvi/execution", admin, {"inputs": {"redBand": {"href": "http://x"}}})
    assert (
        link_for_a_number.status_code == 400
        and "a link is accepted only for an input that is a file" in link_for_a_number.text
    )
    assert client.count_flow_runs() == before  # no run, so no container


def test_a_nul_character_is_refused_before_anything_runs(api, admin, client):
    # PostgreSQL cannot store it in a run's parameters: Prefect's server answers 503 to each retry of the creation.
    before = client.count_flow_runs()
    refused = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "a\u0000b"}})
    assert refused.status_code == 400, refused.text
    assert "$.name: contains the NUL character" in refused.json()["detail"]
    tasks = get(api, "/api/tasks", admin, limit=1000).json()["results"]
    hello = next(task["id"] for task in tasks if task["name"] == "hello")
    tagged = post(api, "/api/executions", admin, {"taskId": hello, "arguments": {"name": "x"}, "tags": ["a\u0000b"]})
    assert tagged.status_code == 400 and "$.tags[0]: contains the NUL character" in tagged.json()["msg"], tagged.text
    assert client.count_flow_runs() == before


def test_a_nul_character_in_a_query_or_path_is_refused_at_once(api, admin):
    # Prefect's server on PostgreSQL answers 503 to a filter holding one; its client retried that for a minute.
    for path, params in [("/jobs", {"processID": "a\x00b"}), ("/api/executions", {"tags": "a\x00b"}),
                         ("/processes/hel%00lo", {}), ("/jobs/%00", {})]:  # fmt: skip
        started = time.monotonic()
        refused = get(api, path, admin, **params)
        assert refused.status_code == 400 and "NUL character" in refused.json()["detail"], (path, refused.text)
        assert time.monotonic() - started < 5


def test_inputs_by_link_and_qualified_value_are_read_and_the_original_uri_kept(api, admin):
    body = {
        "inputs": {"redBand": {"value": 3, "mediaType": "application/json"}, "nirBand": 4,
                   "tiffLocation": {"href": SAMPLE_TIFF.as_uri(), "type": "image/tiff"}},
        "outputs": {"ndvi": {"transmissionMode": "reference"}},
    }  # fmt: skip
    answered = post(api, "/processes/ndvi/execution", admin, body)
    assert answered.status_code == 200, answered.text
    assert http.get(answered.json()["ndvi"]["href"], headers=admin).content[:4] in (b"II*\x00", b"MM\x00*")


def test_jobs_are_flow_runs_listed_with_every_filter_and_paging(api, admin, client):
    started = [post(api, "/processes/hello/execution", admin, {"inputs": {"name": f"list {i}"}},
                    extra_headers={"Prefer": "respond-async"}).json()["jobID"] for i in range(3)]  # fmt: skip
    for job_id in started:
        wait_job(api, admin, job_id)
    # A run started from Prefect itself is a job too.
    deployment = client.read_deployment_by_name("hello/hello")
    from_prefect = client.create_flow_run_from_deployment(deployment.id, parameters={"name": "from prefect"})
    wait_final(client, from_prefect.id)
    listed = get(api, "/jobs", admin, processID="hello", status="successful", limit=2)
    assert listed.status_code == 200 and not ogc_valid(listed.json(), "jobList.yaml")
    page = listed.json()
    assert len(page["jobs"]) == 2 and all(
        j["processID"] == "hello" and j["status"] == "successful" for j in page["jobs"]
    )
    [following] = [link["href"] for link in page["links"] if link["rel"] == "next"]
    more = http.get(following, headers=admin).json()["jobs"]
    seen = {j["jobID"] for j in page["jobs"]} | {j["jobID"] for j in more}
    assert len(seen) == len(page["jobs"]) + len(more)
    everything = get(api, "/jobs", admin, processID="hello", limit=1000).json()["jobs"]
    assert {str(from_prefect.id), *started} <= {j["jobID"] for j in everything}
    future = get(api, "/jobs", admin, datetime="2100-01-01T00:00:00Z/..").json()["jobs"]
    assert future == []
    long_ones = get(api, "/jobs", admin, processID="hello", minDuration=3600).json()["jobs"]
    assert long_ones == []
    short_ones = get(api, "/jobs", admin, processID="hello", maxDuration=3600, limit=3).json()["jobs"]
    assert len(short_ones) == 3
    assert get(api, "/jobs", admin, type="not-a-process").json()["jobs"] == []
    assert get(api, "/jobs", admin, datetime="yesterday").status_code == 400


def test_a_failed_jobs_results_give_its_reason_and_category(api, admin):
    job = post(api, "/processes/bad-data/execution", admin, {"inputs": {}}, extra_headers={"Prefer": "respond-async"})
    final = wait_job(api, admin, job.json()["jobID"])
    assert final["status"] == "failed"
    failed = get(api, f"/jobs/{job.json()['jobID']}/results", admin)
    assert failed.status_code == 500 and "exit code 3 (corrupt-input, a data error)" in failed.json()["detail"]


def test_dismiss_stops_the_container_answers_dismissed_and_is_idempotent(api, admin, docker_runtime):
    job_id = post(api, "/processes/sleeper/execution", admin, {"inputs": {"duration": 2.8}},
                  extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
    label = {"label": f"granary.execution-id={job_id}"}
    deadline = time.monotonic() + 120
    while not docker_runtime.client.containers.list(filters=label, sparse=True):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    dismissed = http.delete(f"{api.url}/jobs/{job_id}", headers=admin)
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    deadline = time.monotonic() + 5
    while docker_runtime.client.containers.list(all=True, filters=label, sparse=True):  # sparse: no 404 if it goes
        assert time.monotonic() < deadline, "the container is still there"
        time.sleep(0.1)
    assert wait_job(api, admin, job_id)["status"] == "dismissed"
    again = http.delete(f"{api.url}/jobs/{job_id}", headers=admin)
    assert again.status_code == 200 and again.json()["status"] == "dismissed"
    assert get(api, f"/jobs/{job_id}/results", admin).status_code == 404


def test_logs_metadata_and_the_stac_item_of_a_job(api, admin):
    job_id = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "logged", "times": 2}},
                  extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
    status = wait_job(api, admin, job_id)
    time.sleep(1)  # logs reach the server in batches
    lines = [line["message"] for line in get(api, f"/jobs/{job_id}/logs", admin).json()["logs"]]
    assert "Hello, logged! (2/2)" in lines
    provenance = get(api, f"/jobs/{job_id}/metadata", admin).json()
    assert provenance["processID"] == "hello" and provenance["processVersion"] == "1.0.0"
    assert provenance["submitter"] == "root" and provenance["imageDigest"].startswith("sha256:")
    assert provenance["arguments"] == {"name": "logged", "times": 2} and provenance["attempts"] == 1
    item = http.get(get(api, f"/jobs/{job_id}", admin).json()["stacItem"], headers=admin).json()
    assert item["properties"]["granary:submitter"] == "root" and item["id"] == job_id
    assert status["submitter"] == "root"


class _Subscriber(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append((self.path, json.loads(self.rfile.read(length) or b"null")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


@pytest.fixture
def subscriber(api) -> Iterator[list[tuple[str, Any]]]:
    _Subscriber.received = []
    server = ThreadingHTTPServer(("127.0.0.1", api.subscriber_port), _Subscriber)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield _Subscriber.received
    server.shutdown()
    server.server_close()


def test_subscribers_are_told_of_progress_success_and_failure(api, admin, subscriber):
    base = f"http://127.0.0.1:{api.subscriber_port}"
    hooks = {"successUri": f"{base}/ok", "inProgressUri": f"{base}/running", "failedUri": f"{base}/failed"}
    ok = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "told", "sleep": 1}, "subscriber": hooks},
              extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
    bad = post(api, "/processes/bad-data/execution", admin, {"inputs": {}, "subscriber": hooks},
               extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
    deadline = time.monotonic() + 180
    while {path for path, _ in subscriber} != {"/ok", "/running", "/failed"}:
        assert time.monotonic() < deadline, subscriber
        time.sleep(0.2)
    by_path = {path: document for path, document in subscriber}
    assert by_path["/running"]["jobID"] in (ok, bad) and by_path["/running"]["status"] == "running"
    assert "greeting" in by_path["/ok"]
    assert by_path["/failed"]["jobID"] == bad and "exit code 3" in by_path["/failed"]["exception"]["detail"]


def test_a_subscriber_address_the_policy_refuses_is_refused_and_a_dead_one_loses_nothing(api, admin):
    refused = post(
        api,
        "/processes/hello/execution",
        admin,
        {"inputs": {"name": "x"}, "subscriber": {"successUri": "http://169.254.169.254/latest/"}},
    )
    assert refused.status_code == 400 and "is not a public address" in refused.json()["detail"]
    dead = {"successUri": f"http://127.0.0.1:{api.subscriber_port}/nobody-listens"}
    answered = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "dead"}, "subscriber": dead})
    assert answered.status_code == 200 and "greeting" in answered.json()  # the job and its answer go on


def test_part_2_deploys_replaces_and_undeploys_processes_in_any_format(api, admin, client, docker_runtime):
    from helpers import REFERENCE, ROOT, runner_for

    from granary_flows.definition import RuntimeKind
    from granary_flows.store import ResultsStore

    task = (ROOT / "tests" / "tasks" / "sleeper.yaml").read_text().replace("name: sleeper", "name: deployed")
    created = http.post(f"{api.url}/processes", headers=admin | {"Content-Type": "application/yaml"}, content=task)
    assert created.status_code == 201 and created.headers["Location"].endswith("/processes/deployed")
    plugin = (REFERENCE / "process-api" / "plugins" / "pyecho.yml").read_text()
    assert http.post(f"{api.url}/processes", headers=admin, content=plugin).status_code == 201
    granary = {"name": "Deployed from Granary", "validator": {"schema": {"type": "object"}},
               "jobDefinition": "x:1", "jobQueue": "q"}  # fmt: skip
    assert http.post(f"{api.url}/processes", headers=admin, json=granary).json()["id"] == "deployed-from-granary"
    broken = http.post(f"{api.url}/processes", headers=admin, content=task.replace("memory: 32", "memroy: 32"))
    assert broken.status_code == 400 and "memroy" in broken.json()["detail"]
    assert get(api, "/processes/deployed", admin).json()["version"] == "1.0.0"

    from granary_flows.catalog import RegistryCatalog

    class OnlyDeployed(RegistryCatalog):
        """The registry, as `granary serve` reads it (a run executes what was registered when it was created, or
        later), for the task this test deployed alone: the session's runner serves the others."""

        def deployment_ids(self, client):
            return [i for i in super().deployment_ids(client) if self._entries[i].name == "deployed"]

    with runner_for(OnlyDeployed(refresh=0), ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
        running = post(api, "/processes/deployed/execution", admin, {"inputs": {"duration": 2}},
                       extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
        wait_job(api, admin, running, until=("running", "successful", "failed"))
        replaced = http.put(
            f"{api.url}/processes/deployed",
            headers=admin,
            content=task.replace("version: 1.0.0", "").replace("name: deployed", "name: deployed\nversion: 2.0.0"),
        )
        assert replaced.status_code == 200, replaced.text
        final = wait_job(api, admin, running)
    assert final["status"] == "successful"
    assert get(api, f"/jobs/{running}/metadata", admin).json()["processVersion"] == "1.0.0"  # it kept its version
    assert get(api, "/processes/deployed", admin).json()["version"] == "2.0.0"
    assert http.delete(f"{api.url}/processes/deployed", headers=admin).status_code == 204
    assert get(api, "/processes/deployed", admin).status_code == 404
    assert client.read_flow_run(running).state.is_completed()  # its runs stay


@pytest.mark.quick
def test_owslib_reads_processes_and_executes_synchronously_and_asynchronously(api, admin):
    from owslib.ogcapi.processes import Processes

    service = Processes(api.url, headers=dict(admin))
    assert "hello" in {p["id"] for p in service.processes()}
    assert service.process("hello")["inputs"]["name"]["minOccurs"] == 1
    results = service.execute("hello", inputs={"name": "OWSLib"}, response="document")
    assert http.get(results["greeting"]["href"], headers=admin).text == "Hello, OWSLib!\n"
    accepted = service.execute("hello", inputs={"name": "OWSLib later"}, async_=True)
    assert accepted["status"] == "accepted" and wait_job(api, admin, accepted["jobID"])["status"] == "successful"


def test_eoepcas_client_walks_every_endpoint_and_the_async_flow_with_dismiss(api, admin):
    from ogc_api_processes_client.api_client_wrapper import ApiClientWrapper
    from ogc_api_processes_client.configuration import Configuration
    from ogc_api_processes_client.models.execute import Execute

    wrapper = ApiClientWrapper(
        configuration=Configuration(host=api.url), header_name="Authorization", header_value=admin["Authorization"]
    )
    assert wrapper.get_landing_page().links
    assert (
        "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss"
        in wrapper.get_conformance_classes().conforms_to
    )
    listed = wrapper.get_processes().processes
    assert listed and all(p.id and p.version for p in listed)  # the first page
    assert wrapper.get_process_description("sleeper").id == "sleeper"
    status = wrapper.execute("sleeper", Execute.from_dict({"inputs": {"duration": 2.8}}),
                             _headers={"Prefer": "respond-async"})  # fmt: skip
    job_id = status.actual_instance.job_id if hasattr(status, "actual_instance") else status.job_id
    assert job_id in [j.job_id for j in wrapper.get_jobs().jobs]  # the newest job, on the first page
    assert wrapper.get_status(job_id).status.value in ("accepted", "running")
    assert wrapper.dismiss(job_id).status.value == "dismissed"
    done = wait_job(api, admin, job_id)
    assert done["status"] == "dismissed"
    # (The client's generated models cannot send a string input: "multiple matches" of str and bytes. Numbers and
    # lists of strings go through.)
    body = Execute.from_dict({"inputs": {"sleep": 0.1, "write": ["a.txt"]}})
    finished = wrapper.execute("docker-probe", body, _headers={"Prefer": "respond-async"})
    finished_id = finished.actual_instance.job_id if hasattr(finished, "actual_instance") else finished.job_id
    wait_job(api, admin, finished_id)
    # (Its generated Results model cannot read a value that is a list of objects: the raw answer is read here.)
    from ogc_api_processes_client.api.result_api import ResultApi

    links = json.loads(ResultApi(wrapper.api_client).get_result_without_preload_content(finished_id).data)
    [a_txt] = [link["href"] for link in links["results"]["value"] if link["href"].endswith("/a.txt")]
    assert http.get(a_txt, headers=admin).text == "a.txt from attempt 1\n"


def test_every_get_answers_html_to_a_browser(api, admin):
    html = {"Accept": "text/html,application/xhtml+xml"}
    job_id = post(api, "/processes/hello/execution", admin, {"inputs": {"name": "html"}},
                  extra_headers={"Prefer": "respond-async"}).json()["jobID"]  # fmt: skip
    wait_job(api, admin, job_id)
    for path in ("/", "/conformance", "/processes", "/processes/hello", "/jobs", f"/jobs/{job_id}",
                 f"/jobs/{job_id}/results", f"/jobs/{job_id}/logs", f"/jobs/{job_id}/metadata"):  # fmt: skip
        page = http.get(api.url + path, headers=admin | html)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        assert all(src.startswith(f"{api.url}/static/") for src in scripts), scripts  # nothing from outside
        assert "cdn" not in page.text and "<script>" not in page.text  # and no inline script
    assert "Hello" in http.get(api.url + "/processes/hello?f=html", headers=admin).text


def test_granarys_documented_requests_work_verbatim_down_to_its_webhook(s3_api, admin, client, aws, batch_runner):
    """Granary's docs, step by step: POST /api/tasks, POST /api/executions, and the job posting to its webhook."""
    import create_resources
    from helpers import runner_for

    api = s3_api
    create_resources.ensure_queue("veryExpensiveOnDemandQueue")
    create_resources.register_definition(
        "webhookTask", "granary/ndvi:1", ["python3", "-c", WEBHOOK_JOB, "Ref::WEBHOOK_URL"],
        create_resources.stand_in_environment(aws.endpoint),
    )  # fmt: skip
    task = {"name": "Webhook water", "validator": {"schema": {"$schema": "http://json-schema.org/draft-07/schema",
            "type": "object", "required": ["foo"], "properties": {"foo": {"type": "integer", "default": 0}}}},
            "jobDefinition": "webhookTask:1", "jobQueue": "veryExpensiveOnDemandQueue"}  # fmt: skip
    created = post(api, "/api/tasks", admin, task)
    assert created.status_code == 200, created.text
    assert created.json()["name"] == "Webhook water" and created.json()["jobDefinition"] == "webhookTask:1"
    assert any(t["id"] == created.json()["id"] for t in get(api, "/api/tasks", admin, limit=1000).json()["results"])
    from granary_flows.registry import Registry

    served = {created.json()["id"]: Registry(client).definition("webhook-water")}
    served = {__import__("uuid").UUID(k): v for k, v in served.items()}
    with runner_for(served, batch_runner.store, batch_runner.runtimes):
        refused = post(api, "/api/executions", admin, {"name": "bad", "taskId": created.json()["id"], "arguments": {}})
        assert refused.status_code == 400 and "'foo' is a required property" in refused.text
        execution = post(
            api,
            "/api/executions",
            admin,
            {"name": "top tier task execution", "taskId": created.json()["id"], "arguments": {"foo": 4}},
        )
        assert execution.status_code == 200, execution.text
        document = execution.json()
        assert document["status"] == "CREATED" and document["webhookId"] and document["arguments"] == {"foo": 4}
        deadline = time.monotonic() + 180
        while (current := get(api, f"/api/executions/{document['id']}", admin).json())["status"] in (
            "CREATED",
            "STARTED",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert current["status"] == "SUCCESSFUL", current
    [result] = current["results"]
    assert result["title"] == "Execution Results" and http.get(result["href"]).text == "water: 4\n"
    used = http.post(f"{api.url}/api/executions/{document['id']}/results/{document['webhookId']}",
                      json={"message": "again"})  # fmt: skip
    assert used.status_code == 404  # single use
    listed = get(api, "/api/executions", admin, taskId=created.json()["id"], status="SUCCESSFUL").json()
    assert [e["id"] for e in listed["results"]] == [document["id"]]
    started = time.monotonic()
    assert get(api, "/api/executions", admin, taskId="no-such-task").json()["results"] == []
    assert time.monotonic() - started < 5  # it once asked Prefect for a name no run has, which PostgreSQL refused


# The webhook job of Granary's docs: it writes its result next to its outputs and posts Granary's success message.
WEBHOOK_JOB = """
import json, os, sys, urllib.request
import boto3
bucket, _, prefix = os.environ["OUTPUT_URI"].removeprefix("s3://").partition("/")
args = json.loads(os.environ["GRANARY_ARGUMENTS"])
boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL")).put_object(
    Bucket=bucket, Key=prefix + "/water.txt", Body=("water: %d\\n" % args["foo"]).encode())
message = {"results": [{"href": "water.txt", "title": "Execution Results",
                        "description": "results for a very important execution", "roles": ["data"],
                        "type": "text/plain"}]}
request = urllib.request.Request(sys.argv[1], data=json.dumps(message).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
print(urllib.request.urlopen(request).status)
"""


def test_granarys_webhook_results_take_effect_on_docker_too(api, admin, client):
    """A body posted to an execution's webhook while its container runs is its results (or its failure); the outputs
    the container stores afterwards do not wipe it."""
    from granary_flows.webhooks import webhook_url

    def start_probe() -> str:
        body = {"inputs": {"sleep": 6, "write": ["a.txt", "b.txt"]}}
        accepted = post(
            api, "/processes/docker-probe/execution", admin, body, extra_headers={"Prefer": "respond-async"}
        )
        assert accepted.status_code == 201, accepted.text
        return accepted.json()["jobID"]

    named, refused = start_probe(), start_probe()
    results = {"results": [{"href": "b.txt", "title": "from the webhook", "roles": ["data"]}]}
    taken = http.post(webhook_url(named), json=results)
    assert taken.status_code == 200 and taken.json() == {"id": named, "accepted": True}  # nothing else of the job
    # The probe retries a job error: its second attempt says so again, as a real job would (one post per attempt).
    posted = 0
    while not client.read_flow_run(refused).state.is_final():
        answer = http.post(webhook_url(refused), json={"message": "the scene was all cloud"})
        assert answer.status_code in (200, 404), answer.text  # 404: this attempt's post is not read yet
        posted += answer.status_code == 200
        time.sleep(0.5)
    assert posted >= 2
    assert wait_job(api, admin, named)["status"] == "successful"
    document = client.read_flow_run(named).state.result()
    assert document["source"] == "webhook"
    assert [(a["title"], a["href"].rsplit("/", 1)[1]) for a in document["results"]] == [("from the webhook", "b.txt")]
    failed = wait_job(api, admin, refused)
    assert failed["status"] == "failed" and "the scene was all cloud" in failed["message"], failed


def test_a_job_created_while_the_server_answers_503_is_created_once(api, admin, client, prefect_server):
    """The Prefect server creates the run and answers 503 (overloaded), twice: the API asks again with the same
    idempotency key and answers 201 with that one job; a client that retries with its Idempotency-Key gets the same
    job again. Nothing runs twice."""
    from helpers import granary_serve, read_until, stop_process
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from stall import StallingProxy

    from granary_flows.server import free_port, wait_until

    proxy = StallingProxy(prefect_server.removesuffix("/api"), r"POST /api/deployments/[^/]+/create_flow_run", 2)
    port = free_port()
    process = granary_serve(
        "--port", str(port), command="api", PREFECT_API_URL=f"{proxy.url}/api", GRANARY_API_AUTH="tokens",
        GRANARY_API_TOKENS_FILE=str(api.tokens_file),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        read_until(process, "granary api:", timeout=180)
        wait_until(lambda: http.get(f"{url}/conformance", timeout=2).status_code == 200, "granary api", process)
        request = {"inputs": {"name": "stalled"}}
        headers = admin | {"Prefer": "respond-async", "Idempotency-Key": "stalled-request-1"}
        answered = http.post(f"{url}/processes/hello/execution", headers=headers, json=request, timeout=120)
        assert answered.status_code == 201, answered.text
        assert len(proxy.stalled) == 2  # the server was asked three times, and created the job once
        again = http.post(f"{url}/processes/hello/execution", headers=headers, json=request, timeout=120)
        assert again.status_code == 201 and again.json()["jobID"] == answered.json()["jobID"]
        other = http.post(f"{url}/processes/hello/execution", headers=headers, json={"inputs": {"name": "x"}})
        assert other.status_code == 422  # the key names another request's job
    finally:
        stop_process(process)
        proxy.close()
    mine = FlowRunFilter(tags=FlowRunFilterTags(all_=["submitted-by:root"]))
    runs = [r for r in client.read_flow_runs(flow_run_filter=mine, limit=200) if r.parameters == {"name": "stalled"}]
    assert [str(r.id) for r in runs] == [answered.json()["jobID"]]
    assert wait_job(api, admin, str(runs[0].id))["status"] == "successful"


def test_forty_waiting_synchronous_executes_leave_the_api_answering(api, admin, client, tmp_path):
    """Synchronous executes wait on the event loop, not in the API's worker threads: with 40 of them waiting on jobs
    no runner takes, every other route still answers at once, and each of them ends with its 504 and Location."""
    from concurrent.futures import ThreadPoolExecutor

    from helpers import granary_serve, read_until, register_definitions, stop_process, task_copy

    from granary_flows.server import free_port, wait_until

    register_definitions(client, [task_copy("sleeper", tmp_path, "unserved-sleeper")])  # no runner serves it
    port = free_port()
    process = granary_serve(
        "--port", str(port), command="api", GRANARY_API_AUTH="tokens", GRANARY_API_TOKENS_FILE=str(api.tokens_file),
        GRANARY_API_SYNC_TIMEOUT="15",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        read_until(process, "granary api:", timeout=180)
        wait_until(lambda: http.get(f"{url}/conformance", timeout=2).status_code == 200, "granary api", process)

        def synchronous(_: int) -> Any:
            return http.post(f"{url}/processes/unserved-sleeper/execution", headers=admin,
                             json={"inputs": {"duration": 1}}, timeout=60)  # fmt: skip

        with ThreadPoolExecutor(40) as pool:
            waiting = [pool.submit(synchronous, i) for i in range(40)]
            time.sleep(3)  # they are all waiting now
            answer_times = []
            while not all(future.done() for future in waiting):
                started = time.monotonic()
                assert http.get(f"{url}/processes", headers=admin, timeout=30).status_code == 200
                answer_times.append(time.monotonic() - started)
                time.sleep(0.2)
            answers = [future.result() for future in waiting]
    finally:
        stop_process(process)
    print(f"\nworst answer of /processes while 40 synchronous executes waited: {max(answer_times):.3f} s")
    assert len(answer_times) > 20 and max(answer_times) < 2.0
    assert [a.status_code for a in answers] == [504] * 40 and all("Location" in a.headers for a in answers)
    for answer in answers:
        client.delete_flow_run(answer.headers["Location"].rsplit("/", 1)[1])


def test_every_document_the_api_serves_is_valid_against_ogcs_schemas_for_every_output_shape(api, admin, runner):
    """Every route, as OGC's schemas of Part 1 describe it, and every shape an output can have: a file, several files,
    a number, a list, an object (a qualified value), a process-api value, and a Seed job's JSON output."""
    checked: list[str] = []

    def valid(document: Any, schema: str, what: str) -> None:
        problems = ogc_valid(document, schema)
        assert not problems, (what, problems, document)
        checked.append(f"{what} ({schema})")

    valid(http.get(f"{api.url}/").json(), "landingPage.yaml", "landing page")
    valid(http.get(f"{api.url}/conformance").json(), "confClasses.yaml", "conformance")
    valid(get(api, "/processes", admin, limit=1000).json(), "processList.yaml", "process list")
    jobs = {
        "shapes": {"count": 3},
        "reporter": {"how": "plugin-value"},
        "random-number": {"COUNT": 4, "SEED": 7},
        "hello": {"name": "OGC"},
    }
    for process, inputs in jobs.items():
        valid(get(api, f"/processes/{process}", admin).json(), "process.yaml", f"{process} description")
        answered = post(api, f"/processes/{process}/execution", admin, {"inputs": inputs})
        assert answered.status_code == 200, answered.text
        valid(answered.json(), "results.yaml", f"{process} synchronous results")
        job = answered.headers["Location"].rsplit("/", 1)[1]
        valid(get(api, f"/jobs/{job}", admin).json(), "statusInfo.yaml", f"{process} status")
        valid(get(api, f"/jobs/{job}/results", admin).json(), "results.yaml", f"{process} results")
    described = get(api, "/processes/shapes", admin).json()["outputs"]
    assert set(described) == {"map", "tiles", "count", "labels", "stats"}
    answered = post(api, "/processes/shapes/execution", admin, {"inputs": {}}).json()
    assert answered["count"] == 3 and answered["labels"] == ["water", "field"]
    assert answered["stats"] == {"value": {"mean": 0.4}, "mediaType": "application/json"}  # an object, qualified
    assert [t["title"] for t in answered["tiles"]["value"]] == ["tiles", "tiles"] and "href" in answered["map"]
    seed = get(api, "/processes/random-number", admin).json()["outputs"]
    assert "total" in seed  # a Seed job's JSON output is an output of the process
    valid(get(api, "/jobs", admin, limit=20).json(), "jobList.yaml", "job list")
    valid(get(api, "/jobs/00000000-0000-4000-8000-000000000000", admin).json(), "exception.yaml", "no such job")
    valid(http.get(f"{api.url}/jobs").json(), "exception.yaml", "no identity")
    raw = http.post(f"{api.url}/processes/hello/execution", headers=admin,
                    json={"inputs": {"name": "raw"}, "response": "raw"})  # fmt: skip
    assert raw.status_code == 204 and "/outputs/greeting.txt>" in raw.headers["Link"]  # by reference: a Link
    print(
        f"\nOGC documents checked: {len(checked)}; output shapes: file, files, number, list, object, "
        "process-api value, Seed JSON output"
    )
    assert len(checked) >= 20
