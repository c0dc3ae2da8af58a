"""Input staging under the operator's policy: what the runner fetches on a user's behalf, and what it refuses.

The runner reads with its own rights, so every refusal here is something an argument could otherwise have made it
copy into a container and the results store: host files, the runner's own environment, internal addresses.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from granary_flows.cancellation import CancelToken
from granary_flows.errors import ExecutionCancelled, StagingError
from granary_flows.policy import Policy, policy_from_environment
from granary_flows.staging import container_arguments, stage_inputs

pytestmark = pytest.mark.unit


def stage(uri: str | list[str], tmp_path: Path, policy: Policy, cancel: CancelToken | None = None):
    return stage_inputs({"scene": uri}, tmp_path / "inputs", policy, cancel)


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    (folder / "scene.tif").write_bytes(b"pixels")
    return folder


def test_a_file_under_an_allowed_folder_is_staged_and_the_container_sees_its_path(tmp_path, allowed):
    [staged] = stage((allowed / "scene.tif").as_uri(), tmp_path, Policy(file_roots=[str(allowed)]))
    assert Path(staged.local).read_bytes() == b"pixels" and staged.size == 6
    assert container_arguments({"scene": staged.uri, "n": 1}, [staged]) == {
        "scene": "/granary/inputs/scene/scene.tif",
        "n": 1,
    }


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/shadow",
        "file:///etc/passwd",
        "file:///proc/self/environ",
        "file:///root/.aws/credentials",
        "file:///dev/zero",
    ],
)
def test_host_files_outside_the_allowed_folders_are_refused(tmp_path, allowed, uri):
    with pytest.raises(StagingError, match="not under a folder the operator allows inputs to be read from") as caught:
        stage(uri, tmp_path, Policy(file_roots=[str(allowed)]))
    assert str(allowed) not in str(caught.value)  # which folders are allowed is not told to whoever asks
    assert not list((tmp_path / "inputs").rglob("*.*"))


def test_nothing_is_read_from_files_by_default(tmp_path, allowed):
    with pytest.raises(StagingError, match=r"not under a folder the operator allows .*\(GRANARY_ALLOW_FILE_ROOTS\)$"):
        stage((allowed / "scene.tif").as_uri(), tmp_path, Policy())


def test_a_path_that_climbs_out_or_a_link_that_leads_out_is_refused(tmp_path, allowed):
    policy = Policy(file_roots=[str(allowed)])
    with pytest.raises(StagingError, match="not under a folder"):
        stage(f"file://{allowed}/../../../../etc/passwd", tmp_path, policy)
    (allowed / "innocent.tif").symlink_to("/etc/passwd")
    with pytest.raises(StagingError, match="not under a folder"):
        stage((allowed / "innocent.tif").as_uri(), tmp_path, policy)


def test_a_device_or_fifo_under_an_allowed_folder_is_refused_not_read(tmp_path, allowed):
    os.mkfifo(allowed / "pipe")
    started = time.monotonic()
    with pytest.raises(StagingError, match="not a regular file"):
        stage((allowed / "pipe").as_uri(), tmp_path, Policy(file_roots=[str(allowed)]))
    assert time.monotonic() - started < 2  # never blocked opening it
    with pytest.raises(StagingError, match="not a regular file"):
        stage("file:///dev/zero", tmp_path, Policy(file_roots=["/dev"]))


def test_size_caps_per_input_and_per_execution(tmp_path, allowed):
    (allowed / "big.bin").write_bytes(b"x" * (3 * 2**20))
    with pytest.raises(StagingError, match=r"larger than the 2 MiB an input may be"):
        stage((allowed / "big.bin").as_uri(), tmp_path, Policy(file_roots=[str(allowed)], max_input_mib=2))
    with pytest.raises(StagingError, match=r"inputs would exceed 4 MiB"):
        stage(
            [(allowed / "big.bin").as_uri(), (allowed / "big.bin").as_uri()],
            tmp_path,
            Policy(file_roots=[str(allowed)], max_inputs_mib=4),
        )


def test_files_of_one_list_with_the_same_name_are_staged_apart(tmp_path):
    for index in range(2):
        (tmp_path / f"tile-{index}").mkdir()
        (tmp_path / f"tile-{index}" / "ndvi.tif").write_text(f"tile {index}")
    uris = [(tmp_path / f"tile-{index}" / "ndvi.tif").as_uri() for index in range(2)]
    staged = stage_inputs({"rasters": uris}, tmp_path / "inputs", Policy(file_roots=[str(tmp_path)]))
    assert container_arguments({"rasters": uris}, staged) == {
        "rasters": ["/granary/inputs/rasters/0/ndvi.tif", "/granary/inputs/rasters/1/ndvi.tif"]
    }
    assert [Path(item.local).read_text() for item in staged] == ["tile 0", "tile 1"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def do_GET(self):
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.partition("?to=")[2])
            self.end_headers()
        elif self.path.startswith("/slow"):
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            for _ in range(600):
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.1)
        else:
            super().do_GET()


@pytest.fixture
def web(tmp_path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "scene.tif").write_bytes(b"served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "uri",
    [
        "http://{web}/scene.tif",  # loopback
        "http://localhost:{port}/scene.tif",  # a name that resolves to loopback
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # the EC2 metadata service
        "http://10.0.0.1/x",  # a private range
        "http://[::1]:{port}/scene.tif",
        "http://0.0.0.0:{port}/scene.tif",
    ],
)
def test_internal_addresses_are_refused_before_anything_is_sent(tmp_path, web, uri):
    port = web.rsplit(":", 1)[1]
    with pytest.raises(StagingError, match="is not a public address"):
        stage(uri.format(web=web, port=port), tmp_path, Policy())


def test_an_allowed_address_is_fetched_and_a_redirect_out_of_it_is_refused(tmp_path, web):
    policy = Policy(allow_hosts=[web])
    [staged] = stage(f"http://{web}/scene.tif", tmp_path, policy)
    assert Path(staged.local).read_bytes() == b"served"
    with pytest.raises(StagingError, match=r"not a public address.*\(a redirect led there\)"):
        stage(f"http://{web}/redirect?to=http://127.0.0.2:1/secret", tmp_path, policy)
    with pytest.raises(StagingError, match=r"not a public address"):
        stage(f"http://{web}/redirect?to=http://169.254.169.254/latest/", tmp_path, policy)


def test_the_prefect_server_is_refused_even_when_its_address_is_allowed(tmp_path, web, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://{web}/api")
    with pytest.raises(StagingError, match="is not a public address"):
        stage(f"http://{web}/api/admin/settings", tmp_path, Policy(allow_hosts=[web]))


def test_credentials_in_a_uri_are_never_said(tmp_path, web):
    with pytest.raises(StagingError) as refused:
        stage(f"http://ada:s3cr3t@{web}/scene.tif", tmp_path, Policy())
    assert "s3cr3t" not in str(refused.value) and "****@" in str(refused.value)


def test_cancelling_stops_a_slow_download_at_once(tmp_path, web):
    cancel = CancelToken()
    threading.Timer(1.0, cancel.cancel, args=("cancellation was requested",)).start()
    started = time.monotonic()
    with pytest.raises(ExecutionCancelled):
        stage(f"http://{web}/slow", tmp_path, Policy(allow_hosts=[web]), cancel)
    assert time.monotonic() - started < 3


def test_the_policy_is_read_from_the_environment():
    policy = policy_from_environment(
        {
            "GRANARY_ALLOW_FILE_ROOTS": "/data:/mnt/scenes",
            "GRANARY_ALLOW_HOSTS": "10.0.0.0/8, tiles.internal:8080",
            "GRANARY_ALLOW_BUCKETS": "scenes,results",
            "GRANARY_MAX_INPUT_MIB": "100",
        }
    )
    assert policy.file_roots == ["/data", "/mnt/scenes"] and policy.buckets == ["scenes", "results"]
    assert policy.address_allowed("x", "10.1.2.3", 80) and not policy.address_allowed("x", "192.168.1.1", 80)
    assert policy.address_allowed("tiles.internal", "172.16.0.5", 8080)
    assert not policy.address_allowed("tiles.internal", "172.16.0.5", 80)
    assert policy.max_input_bytes == 100 * 2**20


def test_an_s3_key_that_climbs_out_of_its_bucket_as_text_is_refused(tmp_path):
    with pytest.raises(StagingError, match=r"may not hold '\.\.'"):
        stage("s3://allowed/../other/secret.txt", tmp_path, Policy(buckets=["allowed"]))
