"""The run form a user sees in both of Prefect's UIs, driven in Debian's Chromium by playwright-core."""

import glob
import json
import subprocess
import time

import httpx
import pytest
from helpers import (
    BUCKET,
    ROOT,
    SAMPLE_TIFF,
    TOKENS,
    containers_of,
    execute,
    granary_serve,
    read_until,
    stop_process,
    wait_final,
)
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort

FIELDS = ["Red band", "Near-infrared band", "GeoTIFF", "Output file name (Optional)"]


def drive(script: str, *arguments: object, timeout: float) -> dict:
    """Run one of the browser scripts under tests/ui/ in Node and return the JSON document it prints."""
    driven = subprocess.run(
        ["node", str(ROOT / "tests" / "ui" / script), *map(str, arguments)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert driven.returncode == 0, driven.stderr
    return json.loads(driven.stdout)


def test_the_ndvi_run_form_shows_the_task_arguments_and_accepts_only_valid_runs(
    client, runner, prefect_server, tmp_path
):
    deployment = client.read_deployment_by_name("ndvi/ndvi")
    valid = {"Red band": 3, "Near-infrared band": 4, "GeoTIFF": SAMPLE_TIFF.as_uri()}
    invalid = {"Red band": 0, "Near-infrared band": 4, "GeoTIFF": SAMPLE_TIFF.as_uri()}
    started = time.time()
    ui = prefect_server.removesuffix("/api")
    report = drive("run_form.mjs", ui, deployment.id, tmp_path, json.dumps(valid), json.dumps(invalid), timeout=240)

    for ui in ("v1", "v2"):
        seen = report[ui]
        assert [label for label in seen["labels"] if label in FIELDS] == FIELDS, ui
        assert "1-based index of the near-infrared band." in seen["text"], ui
        assert seen["invalidUrl"].endswith("/run"), f"{ui}: an invalid run left the form"
        assert not seen["validUrl"].endswith("/run"), f"{ui}: a valid run was not submitted: {seen['problems']}"
        unexpected = [p for p in seen["problems"] if not (p.startswith("503 POST") and p.endswith("/create_flow_run"))]
        assert not unexpected, f"{ui}: {unexpected}"
    assert "0 is less than the minimum of 1" in report["v1"]["invalidText"]
    assert report["v2"]["invalidMessages"]["Red band"] == "Value must be greater than or equal to 1."

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        sort=FlowRunSort.ID_DESC,
        limit=200,
        offset=0,
    )
    from_form = [r for r in runs if r.created.timestamp() >= started - 1]
    assert sorted(r.parameters["redBand"] for r in from_form) == [3, 3]  # one per UI, none with the invalid 0
    for flow_run in from_form:
        final = wait_final(client, flow_run.id)
        assert final.state.is_completed(), final.state.message
        assert final.state.result()["arguments"]["tiffLocation"] == SAMPLE_TIFF.as_uri()


def test_retry_in_the_ui_resumes_a_failed_pipeline_from_its_failed_step(
    client, runner, prefect_server, docker_runtime, tmp_path
):
    gate = tmp_path / "gate.txt"
    gate.write_text("closed\n")
    failed = execute(client, "three-steps", text="ui", gate=gate.as_uri())
    assert failed.state.is_failed()
    gate.write_text("open\n")
    retried_at = time.time()

    report = drive("retry.mjs", prefect_server.removesuffix("/api"), failed.id, tmp_path, timeout=120)
    assert report["body"]["status"] == "ACCEPT", report
    assert not report["problems"], report

    final = wait_final(client, failed.id)
    assert final.state.is_completed(), final.state.message
    assert len(containers_of(docker_runtime, failed.id, retried_at)) == 1  # the third step's alone


def test_the_apis_form_runs_a_job_whose_page_and_prefect_run_page_show_its_quicklook_and_open_its_result(
    api, runner, prefect_server, results_root, tmp_path
):
    """In Chromium: sign in to `granary api`, run ndvi from its HTML form, see the job completed with its picture, and
    the same picture on Prefect's page of the run, which opens it from another origin without the API's cookie; a
    click on the ndvi result's link, on either page, downloads the GeoTIFF itself."""
    inputs = {"Red band": 3, "Near-infrared band": 4, "GeoTIFF": SAMPLE_TIFF.as_uri()}
    seen = drive("api_form.mjs", api.url, prefect_server.removesuffix("/api"), api.tokens["bob"], "ndvi",
                 json.dumps(inputs), tmp_path, r"\.tif$", timeout=300)  # fmt: skip
    assert seen["job"]["status"] == "successful", seen["job"]["text"]
    assert "submitted by\tbob" in seen["job"]["text"]
    stored = next((results_root / "ndvi" / seen["jobId"]).glob("*.tif")).read_bytes()
    for page in ("job", "prefect"):
        picture = seen[page]["picture"]
        assert picture["width"] > 0 and picture["height"] > 0, (page, picture)  # it loaded: a real PNG
        assert picture["src"].startswith(api.url) and "signature=" in picture["src"], (page, picture)
        download = seen[page]["download"]
        assert download["url"].startswith(f"{api.url}/jobs/{seen['jobId']}/outputs/"), (page, download)
        assert download["head"] in ("49492a00", "4d4d002a") and download["size"] == len(stored), (page, download)
    assert "signature=" in seen["prefect"]["download"]["url"]  # Prefect's page has no cookie of the API's
    assert seen["outside"] == []  # nothing fetched from anywhere but this machine


def test_the_apis_form_draws_and_sends_every_shape_of_argument(api, runner, tmp_path):
    """In Chromium, a process with an argument of every shape: the form shows each default selected and nothing in
    an optional field; rows added and removed, a multi-select, a nested field and a checkbox are sent as the values
    they show, optional fields left empty are left out (never "None"), and the completed job's page links the file
    the container wrote."""
    seen = drive("form_shapes.mjs", api.url, api.tokens["bob"], tmp_path, timeout=240)
    assert seen["shown"] == {
        "scale": "10", "note": "", "label": "", "method": ["bilinear"], "classes": ["water", "field"],
        "mask": False, "thresholdRows": 0,
    }  # fmt: skip
    assert seen["status"] == "successful", seen["text"]
    assert seen["given"] == {
        "scale": 7, "method": "cubic", "classes": ["water", "field", "forest"], "thresholds": [0.1, 0.9],
        "window": {"width": 256}, "mask": True, "label": None,  # a nullable argument left out is null, not "None"
    }, (seen["given"], seen["links"])  # fmt: skip


ATTACK = """<!doctype html><html><body>
<iframe id="framed" src="{api}/processes/hello?f=html" width="400" height="300"></iframe>
<form id="simple" method="POST" action="{api}/processes/hello/execution" enctype="text/plain" target="sink">
<input name='{{"inputs": {{"name": "csrf-form", "x": "' value='"}}}}'></form><iframe name="sink"></iframe>
<form id="login" method="POST" action="{api}/login" target="sink2"><input name="token" value="{other_token}"></form>
<iframe name="sink2"></iframe>
<script>
window.said = [];
(async () => {{
  document.getElementById("simple").submit();
  const json = JSON.stringify({{inputs: {{name: "csrf-fetch"}}}});
  try {{ await fetch("{api}/processes/hello/execution", {{method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"Content-Type": "text/plain"}}, body: json}}); window.said.push("no-cors sent"); }}
  catch (e) {{ window.said.push("no-cors: " + e); }}
  try {{ const r = await fetch("{api}/processes/hello/execution", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json"}}, body: json.replace("csrf-fetch", "csrf-json")}});
    window.said.push("json " + r.status); }} catch (e) {{ window.said.push("json refused"); }}
  try {{ await fetch("{api}/jobs/{victim}", {{method: "DELETE", mode: "no-cors", credentials: "include"}});
    window.said.push("delete sent"); }} catch (e) {{ window.said.push("delete: " + e); }}
  document.getElementById("login").submit();
  setTimeout(() => {{ window.done = true; }}, 3000);
}})();
</script></body></html>"""


def test_hostile_outputs_and_other_sites_cannot_act_as_the_signed_in_admin(api, runner, client, tmp_path):
    """In Chromium, an admin signed in to `granary api` opens a hostile container's HTML, SVG and text outputs, and
    visits pages of another port of the same host and of another site: no script of theirs runs on the API's origin,
    none calls home, none starts, dismisses or registers anything, the API's pages are not framed, and the admin is
    still signed in as the admin."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    import httpx
    from prefect.states import Cancelling

    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    calls_home: list[str] = []

    class Beacon(BaseHTTPRequestHandler):
        def do_GET(self):
            calls_home.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    beacon = ThreadingHTTPServer(("127.0.0.1", 0), Beacon)
    Thread(target=beacon.serve_forever, daemon=True).start()
    hostile = httpx.post(f"{api.url}/processes/hostile/execution", headers=headers, timeout=120,
                         json={"inputs": {"how": "html", "beacon": beacon.server_address[1]}})  # fmt: skip
    assert hostile.status_code == 200, hostile.text
    job = hostile.headers["Location"].rsplit("/", 1)[1]
    victim = httpx.post(f"{api.url}/processes/docker-probe/execution", headers=headers | {"Prefer": "respond-async"},
                        json={"inputs": {"sleep": 60}}).json()["jobID"]  # fmt: skip
    page = ATTACK.format(api=api.url, victim=victim, other_token=api.tokens["bob"])

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *_):
            pass

    attacker = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    Thread(target=attacker.serve_forever, daemon=True).start()
    before = client.count_flow_runs()
    try:
        seen = drive("hostile_pages.mjs", api.url, api.tokens["admin"], job, attacker.server_address[1], timeout=180)
    finally:
        beacon.shutdown()
        attacker.shutdown()

    for name in ("report.html", "map.svg"):
        assert seen["outputs"][name]["downloaded"] == name, seen["outputs"]  # downloaded, never shown
        assert seen["outputs"][name]["title"] != "pwned"
    assert seen["outputs"]["notes.txt"]["status"] == 200 and seen["outputs"]["notes.txt"]["title"] != "pwned"
    assert calls_home == []
    assert client.count_flow_runs() == before  # nothing was started from another origin
    assert not client.read_flow_run(victim).state.is_final()  # nor dismissed
    client.set_flow_run_state(victim, Cancelling(), force=True)
    for where, attack in seen["attacks"].items():  # the frame shows the browser's refusal, not the API's form
        assert "Execute" not in attack["frameText"] and "hello" not in attack["frameText"], (where, attack)
    assert seen["stillAdmin"] == 200
    assert not [r for r in seen["requests"] if r.startswith("POST") and r.endswith("/processes")]


FAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), "")


def api_later(days: int, port: int, results: str, tokens_file: str) -> subprocess.Popen:
    """`granary api` on `port`, its clock `days` ahead (libfaketime; its monotonic clock left alone): the API a person
    reaches that much later."""
    from granary_flows.server import wait_until

    process = granary_serve("--port", str(port), command="api", GRANARY_API_AUTH="tokens",
                            GRANARY_API_TOKENS_FILE=tokens_file, GRANARY_RESULTS_URI=results,
                            GRANARY_API_URL=f"http://127.0.0.1:{port}", LD_PRELOAD=FAKETIME, FAKETIME=f"+{days}d",
                            FAKETIME_DONT_FAKE_MONOTONIC="1")  # fmt: skip
    read_until(process, "granary api:", timeout=180)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/conformance").status_code == 200, "granary api", process)
    return process


@pytest.mark.parametrize("root", ["local", "s3"])
def test_a_result_link_on_prefects_run_page_opens_a_day_later_and_after_a_sign_in_a_week_later(
    root, request, api, client, prefect_server, results_root, tmp_path, monkeypatch
):
    """In Chromium, a week's link: a day after the run, the result link on Prefect's run page downloads the file at
    once; eight days after, it leads to the API's sign-in, and the job's owner lands on the file once signed in, while
    another user signed in finds no such job. On a local results root and on S3 (moto) alike."""
    from granary_flows.server import free_port

    assert FAKETIME, "libfaketime is missing: scripts/setup.sh --test installs Debian's faketime"
    if root == "s3":
        request.getfixturevalue("batch_runner")
        results, process, inputs, pattern = f"s3://{BUCKET}/runs", "s3-writer", {"sizes": [1]}, r"part-1\.bin$"
    else:
        request.getfixturevalue("runner")
        inputs = {"redBand": 3, "nirBand": 4, "tiffLocation": SAMPLE_TIFF.as_uri()}
        results, process, pattern = str(results_root), "ndvi", r"\.tif$"
    port = free_port()
    later = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("GRANARY_API_URL", later)  # where the runner points the links it shows in Prefect's UI
    bob = {"Authorization": f"Bearer {TOKENS['bob']}", "Prefer": "respond-async"}
    job = httpx.post(f"{api.url}/processes/{process}/execution", headers=bob, json={"inputs": inputs}).json()["jobID"]
    assert wait_final(client, job).state.is_completed()
    size = 2**20 if root == "s3" else next((results_root / "ndvi" / job).glob("*.tif")).stat().st_size

    for days, signs_in in ((1, False), (8, True)):
        served = api_later(days, port, results, str(api.tokens_file))
        try:
            seen = drive("link_later.mjs", prefect_server.removesuffix("/api"), job, process, pattern, TOKENS["bob"],
                         tmp_path, timeout=240)  # fmt: skip
            assert seen["href"].startswith(f"{later}/jobs/{job}/outputs/"), seen
            assert seen["askedToSignIn"] is signs_in, seen
            assert seen.get("download", {}).get("size") == size, seen
            if signs_in:  # another user, signed in, is not given bob's file
                alice = httpx.post(f"{later}/login", data={"token": TOKENS["alice"]}, headers={"Origin": later})
                opened = httpx.get(seen["href"], cookies=alice.cookies, follow_redirects=False)
                assert opened.status_code == 404, opened.text
        finally:
            stop_process(served)
