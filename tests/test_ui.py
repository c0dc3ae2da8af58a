"""The run form a user sees in both of Prefect's UIs, driven in Debian's Chromium by playwright-core."""

import json
import subprocess
import time

from helpers import ROOT, SAMPLE_TIFF, containers_of, execute, wait_final
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


def test_the_apis_form_runs_a_job_whose_page_and_prefect_run_page_show_its_quicklook(
    api, runner, prefect_server, tmp_path
):
    """In Chromium: sign in to `granary api`, run ndvi from its HTML form, see the job completed with its picture, and
    the same picture on Prefect's page of the run, which opens it from another origin without the API's cookie."""
    inputs = {"Red band": 3, "Near-infrared band": 4, "GeoTIFF": SAMPLE_TIFF.as_uri()}
    seen = drive("api_form.mjs", api.url, prefect_server.removesuffix("/api"), api.tokens["bob"], "ndvi",
                 json.dumps(inputs), tmp_path, timeout=300)  # fmt: skip
    assert seen["job"]["status"] == "successful", seen["job"]["text"]
    assert "submitted by\tbob" in seen["job"]["text"]
    for page in ("job", "prefect"):
        picture = seen[page]["picture"]
        assert picture["width"] > 0 and picture["height"] > 0, (page, picture)  # it loaded: a real PNG
        assert picture["src"].startswith(api.url) and "signature=" in picture["src"], (page, picture)
    assert seen["outside"] == []  # nothing fetched from anywhere but this machine
