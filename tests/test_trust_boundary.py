"""The runner host is not the sandbox: with hostile arguments and a hostile image, against the real engine and server,
nothing from the host reaches a container, the results store, a log line or an artifact; bad runs fail fast and
alone; secrets never show. (Staging's own rules are unit-tested in test_staging.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import (
    SAMPLE_TIFF,
    api_post,
    artifacts_of,
    cancel_and_time,
    containers_of,
    execute,
    logs_of,
    start,
    wait_final,
)

HOST_SECRETS = ["root:", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"]  # what /etc/shadow, /etc/passwd, environ hold


def stored(results_root: Path, task: str, flow_run_id) -> dict[str, bytes]:
    folder = results_root / task / str(flow_run_id)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/shadow",
        "file:///proc/self/environ",
        "file:///root/.aws/credentials",
        "file:///dev/zero",
        "file:///tmp/../etc/passwd",
        "http://127.0.0.1:{port}/api/admin/settings",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_the_stock_ndvi_task_cannot_be_made_to_read_host_files_or_internal_addresses(
    client, runner, docker_runtime, prefect_server, uri
):
    since = time.time()
    uri = uri.format(port=prefect_server.split(":")[2].split("/")[0])
    flow_run = execute(client, "ndvi", redBand=3, nirBand=4, tiffLocation=uri)
    assert flow_run.state.is_failed()
    assert "cannot read input 'tiffLocation'" in flow_run.state.message
    assert containers_of(docker_runtime, flow_run.id, since) == []  # refused before any container
    said = " ".join(logs_of(client, flow_run.id))
    assert not any(secret in said for secret in HOST_SECRETS)


def test_the_sample_the_operator_allows_is_read(client, runner):
    assert execute(client, "ndvi", redBand=3, nirBand=4, tiffLocation=SAMPLE_TIFF.as_uri()).state.is_completed()


def test_links_in_the_output_folder_are_never_followed_and_are_said(client, runner, results_root):
    flow_run = execute(client, "hostile", how="links")
    assert flow_run.state.is_completed(), flow_run.state.message
    files = stored(results_root, "hostile", flow_run.id)
    assert set(files) == {"real.txt", "granary-execution.json", "granary-item.json"}
    assert files["real.txt"] == b"real\n"
    assert not any(secret.encode() in content for content in files.values() for secret in HOST_SECRETS)
    warnings = flow_run.state.result()["warnings"]
    for name in ("shadow.txt", "environ.txt", "passwd.txt", "deep/etc", "real.txt.metadata.json"):
        assert f"output {name} is a symbolic link, not a regular file: it was not kept" in warnings


def test_a_fifo_in_the_output_folder_is_not_read_and_cannot_hang_the_runner(client, runner, results_root):
    started = time.monotonic()
    flow_run = execute(client, "hostile", how="fifo")
    assert flow_run.state.is_completed(), flow_run.state.message
    assert time.monotonic() - started < 30
    assert "output pipe is a FIFO, not a regular file: it was not kept" in flow_run.state.result()["warnings"]
    assert set(stored(results_root, "hostile", flow_run.id)) == {
        "real.txt",
        "granary-execution.json",
        "granary-item.json",
    }


def test_outputs_beyond_the_cap_fail_the_execution_as_a_system_error_naming_it(client, runner, monkeypatch):
    monkeypatch.setenv("GRANARY_MAX_OUTPUT_MIB", "4")
    flow_run = execute(client, "hostile", how="huge", size_mib=6)
    assert flow_run.state.is_failed()
    assert (
        "the outputs exceed 4 MiB, the most an execution may write (GRANARY_MAX_OUTPUT_MIB)" in flow_run.state.message
    )


def test_a_log_flood_without_newlines_costs_linear_time_and_is_cut(client, runner):
    started = time.monotonic()
    flow_run = execute(client, "hostile", how="flood", flood_bytes=60 * 2**20, timeout=120)
    assert flow_run.state.is_completed(), flow_run.state.message
    assert time.monotonic() - started < 60  # 60 MiB in one line: it took about 110 s of CPU, quadratically, before
    lines = logs_of(client, flow_run.id)
    cut = [line for line in lines if line.endswith("[... line cut at 64 KiB]")]
    assert len(cut) == 1 and len(cut[0]) < 70 * 1024
    assert "after the flood" in lines


@pytest.mark.parametrize(
    "href",
    [
        "../../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "s3://someone-elses-bucket/secret.txt",
        "/granary/outputs/../../etc/passwd",
        "https://example.com/elsewhere.tif",
    ],
)
@pytest.mark.parametrize("how", ["href", "plugin-href"])
def test_a_result_href_that_is_not_the_executions_own_output_fails_it(client, runner, results_root, how, href):
    flow_run = execute(client, "hostile", how=how, href=href)
    assert flow_run.state.is_failed()
    assert "does not name a file this execution wrote" in flow_run.state.message
    assert not (results_root / "hostile" / str(flow_run.id) / "granary-item.json").exists()
    assert not any(f"]({href})" in str(artifact.data) for artifact in artifacts_of(client, flow_run.id))  # no link


@pytest.mark.parametrize("where", ["progress", "message", "plugin"])
def test_a_secret_never_leaves_masked(client, runner, where):
    from prefect.blocks.system import Secret

    Secret(value="s3cr3t-value-42").save("granary-test-token", overwrite=True)
    flow_run = execute(client, "leaky", WHERE=where)
    visible = [flow_run.state.message or "", *logs_of(client, flow_run.id)]
    visible += [json.dumps(a.data) + (a.description or "") for a in artifacts_of(client, flow_run.id)]
    if flow_run.state.is_completed():
        visible.append(json.dumps(flow_run.state.result()))
    assert any("****" in text for text in visible)
    assert not any("s3cr3t-value-42" in text for text in visible)


def test_an_argument_the_task_does_not_take_fails_the_run_instead_of_wedging_it(client, runner, docker_runtime):
    since = time.time()
    flow_run = execute(client, "hello", server_checks=False, name="x", zz=1)
    assert flow_run.state.is_failed()
    assert "unknown argument(s) 'zz' (the task takes: name, times, sleep)" in flow_run.state.message
    assert containers_of(docker_runtime, flow_run.id, since) == []


def test_a_number_prefect_cannot_list_fails_the_run_and_leaves_the_server_listing_runs(client, runner, docker_runtime):
    deployment = client.read_deployment_by_name("hello/hello")
    response = api_post(
        f"/deployments/{deployment.id}/create_flow_run",
        {"parameters": {"name": "x", "times": 10**20}, "enforce_parameter_schema": False},
    )
    flow_run = wait_final(client, response.json()["id"], timeout=180)
    assert flow_run.state.is_failed()
    assert "$.times: 100000000000000000000 is larger than a 64-bit integer" in flow_run.state.message
    assert api_post("/flow_runs/filter", {"limit": 200}).status_code == 200  # the server can list runs again


@pytest.mark.unit
def test_a_pattern_that_cannot_be_matched_in_linear_time_is_refused_at_registration(tmp_path):
    from granary_flows.errors import DefinitionError
    from granary_flows.loading import load_definition

    (tmp_path / "redos.yaml").write_text(
        "name: redos\nvalidator:\n  schema:\n    type: object\n    properties:\n"
        "      word: {type: string, pattern: '^(a|a)*\\1$'}\nruntime: {docker: {image: granary/hello:1}}\n"
    )
    with pytest.raises(DefinitionError, match=r"properties.word.pattern \(line 6\): pattern .* linear time"):
        load_definition(tmp_path / "redos.yaml")


@pytest.mark.unit
def test_an_exponential_pattern_is_matched_in_linear_time():
    from granary_flows.validation import violations

    schema = {"type": "object", "properties": {"word": {"type": "string", "pattern": "^(a+)+$"}}}
    started = time.monotonic()
    assert violations(schema, {"word": "a" * 50_000 + "!"}) != []
    assert time.monotonic() - started < 5  # Python's re takes ~70 s on 31 characters; RE2 well under a second


@pytest.mark.unit
def test_a_remote_ref_is_refused_at_registration_and_never_fetched(tmp_path):
    from granary_flows.errors import DefinitionError
    from granary_flows.loading import load_definition

    (tmp_path / "remote.yaml").write_text(
        "name: remote\nvalidator:\n  schema:\n    type: object\n    properties:\n"
        "      box: {$ref: 'http://10.255.255.1/black-hole.json'}\nruntime: {docker: {image: granary/hello:1}}\n"
    )
    started = time.monotonic()
    with pytest.raises(DefinitionError, match=r"\$ref 'http://10.255.255.1/black-hole.json' does not resolve inside"):
        load_definition(tmp_path / "remote.yaml")
    assert time.monotonic() - started < 2


@pytest.mark.unit
def test_a_yaml_alias_bomb_is_refused_not_expanded(tmp_path):
    from granary_flows.errors import DefinitionError
    from granary_flows.loading import load_definition

    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        bomb.append(
            f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}"
            f", *{previous}, *{previous}, *{previous}, *{previous}]"
        )
    text = "name: bomb\nvalidator:\n  schema:\n    type: object\n    properties:\n      n:\n        default:\n"
    text += "".join(f"          {line}\n" for line in bomb) + "runtime: {docker: {image: granary/hello:1}}\n"
    (tmp_path / "bomb.yaml").write_text(text)
    with pytest.raises(DefinitionError, match="expands to more than 100,000 values"):
        load_definition(tmp_path / "bomb.yaml")


@pytest.mark.parametrize("image", ["UPPER/case:1", "granary/hello:1 ; rm -rf /", "", "a//b:1", "x:y:z"])
def test_an_image_reference_docker_would_refuse_is_refused_by_check(tmp_path, image):
    from granary_flows.errors import DefinitionError
    from granary_flows.loading import load_definition

    (tmp_path / "image.yaml").write_text(
        json.dumps(
            {"name": "img", "validator": {"schema": {"type": "object"}}, "runtime": {"docker": {"image": image}}}
        )
    )
    with pytest.raises(DefinitionError, match=r"runtime.docker"):
        load_definition(tmp_path / "image.yaml")


def test_cancelling_while_an_input_is_staged_ends_the_run_within_two_seconds(
    client, runner, docker_runtime, monkeypatch
):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            try:
                for _ in range(1200):
                    self.wfile.write(b"x" * 1024)
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GRANARY_ALLOW_HOSTS", f"127.0.0.1:{server.server_address[1]}")
    try:
        since = time.time()
        flow_run = start(client, "probe", scene=f"http://127.0.0.1:{server.server_address[1]}/slow.tif")
        deadline = time.monotonic() + 120
        while not client.read_flow_run(flow_run.id).state.is_running():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # well inside the download, which would take a minute
        assert cancel_and_time(client, flow_run.id) < 5  # the upload or download would take far longer
        assert containers_of(docker_runtime, flow_run.id, since) == []
    finally:
        server.shutdown()


def test_a_flood_of_lines_is_forwarded_to_its_budget_and_the_failures_last_lines_are_still_said(client, runner):
    flow_run = execute(client, "hostile", how="lines", lines=30_000, timeout=180)
    assert flow_run.state.is_failed() and "exit code 3" in flow_run.state.message
    said = logs_of(client, flow_run.id, until=lambda said: "the scene has no red band: giving up" in said)
    [notice] = [line for line in said if line.startswith("[granary: ")]
    assert "20,001 more line(s) than the 10,000 a run's logs take" in notice and "19,901 not shown" in notice
    assert said[said.index(notice) + 100] == "the scene has no red band: giving up"  # the last 100 follow it
    assert "line 10000 of 30000" in said and "line 10001 of 30000" not in said
    [summary] = [a.data for a in artifacts_of(client, flow_run.id) if a.key == "hostile-summary"]
    assert "the scene has no red band: giving up" in summary  # the failure explains itself


def test_more_output_files_than_allowed_fail_as_a_system_error_naming_the_cap(client, runner, monkeypatch):
    monkeypatch.setenv("GRANARY_MAX_OUTPUT_FILES", "20")
    flow_run = execute(client, "hostile", how="files", files=50)
    assert flow_run.state.is_failed()
    assert "more than 20 files, the most an execution may write (GRANARY_MAX_OUTPUT_FILES)" in flow_run.state.message


@pytest.mark.parametrize("exit_code", [0, 1])
def test_documents_posing_as_the_runners_own_are_never_kept_nor_served(client, runner, results_root, exit_code):
    flow_run = execute(client, "hostile", how="forge", exit=exit_code)
    files = stored(results_root, "hostile", flow_run.id)
    if exit_code:
        assert flow_run.state.is_failed() and files == {}  # a failed attempt stores nothing it wrote
        return
    assert flow_run.state.is_completed(), flow_run.state.message
    document = json.loads(files["granary-execution.json"])
    assert document["execution_id"] == str(flow_run.id) and document["submitter"] != "admin"  # the runner's own
    assert json.loads(files["granary-item.json"])["id"] == str(flow_run.id)
    assert "granary-quicklook-real.png" not in files
    assert [a["title"] for a in document["results"]] == ["real.txt"]
    assert any("named as the runner's own document" in w for w in document["warnings"])


def test_an_output_named_in_something_else_than_utf8_is_left_out_and_said(client, runner, results_root):
    flow_run = execute(client, "hostile", how="names")
    assert flow_run.state.is_completed(), flow_run.state.message
    document = flow_run.state.result()
    assert [a["title"] for a in document["results"]] == ["real.txt"]
    assert any("bad\ufffdname.txt" in w and "not UTF-8" in w for w in document["warnings"])


def test_no_secret_leaves_by_any_way_out(client, runner, api, results_root, monkeypatch):
    """The operator's variable a task asks for and the credentials a user wrote into a URI, planted by the container
    in every place it can put text (a log line, a progress message, an output's name, a side-car's properties,
    results.json's titles and descriptions, and the message of a failing results.json): none of them shows in any log
    line, artifact, state message, document the runner wrote (the STAC Item among them), stored name, or answer of the
    HTTP API; a failed job's results.json is neither kept nor served."""
    import httpx

    password, in_uri = "pw-0f-the-operator", "pw-in-the-uri"
    monkeypatch.setenv("GRANARY_TEST_PASSWORD", password)
    monkeypatch.setenv("GRANARY_PASS_ENVIRONMENT", "GRANARY_TEST_PASSWORD")
    admin = {"Authorization": f"Bearer {api.tokens['admin']}"}
    source = f"https://ada:{in_uri}@scenes.example/tile.tif"
    visible: list[str] = []
    for fail in (False, True):
        answered = httpx.post(f"{api.url}/processes/leaky-env/execution", headers=admin,
                              json={"inputs": {"source": source, "fail": fail}}, timeout=120)  # fmt: skip
        assert answered.status_code == (500 if fail else 200), answered.text
        visible.append(answered.text)
        job = answered.headers["Location"].rsplit("/", 1)[1]
        flow_run = wait_final(client, job)
        assert flow_run.state.is_failed() if fail else flow_run.state.is_completed(), flow_run.state.message
        visible += [flow_run.state.message or "", *logs_of(client, job)]
        if not fail:
            visible.append(json.dumps(flow_run.state.result()))
            item = json.loads((results_root / "leaky-env" / job / "granary-item.json").read_text())
            assert item["assets"]["plain.txt"]["p"] == "****"  # the side-car's properties reached the Item, masked
        visible += [json.dumps(a.data) + (a.description or "") for a in artifacts_of(client, job)]
        runner_documents = stored(results_root, "leaky-env", job)
        visible += list(runner_documents)  # every stored name
        visible += [content.decode(errors="replace") for name, content in runner_documents.items()
                    if "granary-" in name or name == "results.json"]  # fmt: skip
        for path in ("", "/results", "/logs", "/metadata", "?f=html", "/results?f=html"):
            visible.append(httpx.get(f"{api.url}/jobs/{job}{path}", headers=admin).text)
        assert httpx.get(f"{api.url}/jobs/{job}/outputs/results.json", headers=admin).status_code == 404
        visible.append(httpx.get(f"{api.url}/api/executions/{job}", headers=admin).text)
    visible.append((results_root / "leaky-env" / "collection.json").read_text())
    visible.append(httpx.get(f"{api.url}/jobs?f=html&limit=50", headers=admin).text)
    leaked = [text[:300] for text in visible for secret in (password, in_uri) if secret in text]
    assert leaked == []
    assert any("****" in text for text in visible)  # they were there, masked
