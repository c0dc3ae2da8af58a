"""Who may do what through `granary api`, with real tokens: static API tokens and OIDC JWTs signed by a key the tests
made, every route of the OpenAPI document called by every kind of identity, owned jobs kept from everyone else,
the audit trail, the image policy, and a Prefect server that needs its own credentials."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from helpers import ROOT, TOKENS, bearer, containers_of, oidc_token, runner_for, stop_process, wait_final
from hypothesis import HealthCheck, settings

http = httpx.Client(timeout=120)
RESTRICTED = "hello-for-ndvi-users"
SCRATCH = "scratch-process"
IDENTITIES = ["anonymous", "bob", "alice", "admin"]


@pytest.fixture(scope="module")
def people(api) -> dict[str, dict[str, str]]:
    """Request headers for: no one; bob (a static token, no role); alice (an OIDC token with the role the restricted
    task names); an admin (a static token)."""
    return {
        "anonymous": {},
        "bob": bearer(TOKENS["bob"]),
        "alice": bearer(oidc_token(api, "alice", ["ndvi-users", "offline_access"])),
        "admin": bearer(TOKENS["admin"]),
    }


@pytest.fixture(scope="module")
def restricted(api, people, client, docker_runtime) -> Any:
    """A task only the role `ndvi-users` may run, registered through the API, run by a runner that never saw a file
    of it; alice's jobs on it: one ended, one still running."""
    from granary_flows.definition import RuntimeKind
    from granary_flows.registry import Registry
    from granary_flows.store import ResultsStore

    document = yaml.safe_load((ROOT / "deployments" / "hello.yaml").read_text())
    document |= {"name": RESTRICTED, "access": ["ndvi-users"]}
    created = http.post(f"{api.url}/processes", headers=people["admin"] | {"Content-Type": "application/yaml"},
                        content=yaml.safe_dump(document))  # fmt: skip
    assert created.status_code == 201, created.text
    registry = Registry(client)
    entry = registry.get(RESTRICTED)
    with runner_for({entry.deployment_id: registry.definition(RESTRICTED)}, ResultsStore(),
                    {RuntimeKind.DOCKER: docker_runtime}):  # fmt: skip
        ended = execute(api, people["alice"], RESTRICTED, {"name": "alice"})
        assert ended.status_code == 200, ended.text
        # Long enough to outlast every test of this module on a slow machine; dismissed when they are done.
        running = execute(api, people["alice"], RESTRICTED, {"name": "alice", "sleep": 1800}, asynchronous=True)
        jobs = SimpleNamespace(
            task_id=str(entry.deployment_id),
            ended=ended.headers["Location"].rsplit("/", 1)[1],
            running=running.json()["jobID"],
            output=ended.json()["greeting"]["href"].split("/jobs/", 1)[1].split("/outputs/", 1)[1],
        )
        yield jobs
        http.delete(f"{api.url}/jobs/{jobs.running}", headers=people["admin"])


def execute(api, headers: dict[str, str], process: str, inputs: dict[str, Any], asynchronous: bool = False) -> Any:
    prefer = {"Prefer": "respond-async"} if asynchronous else {}
    return http.post(f"{api.url}/processes/{process}/execution", headers=headers | prefer, json={"inputs": inputs})


def scratch_task(version: str) -> str:
    document = yaml.safe_load((ROOT / "deployments" / "hello.yaml").read_text())
    return yaml.safe_dump(document | {"name": SCRATCH, "version": version})


def routes(r: Any) -> list[tuple[str, str, str, Any, dict[str, int]]]:
    """Every route of the OpenAPI document: (method, template, path, body, identity -> status). The body is JSON,
    or YAML text for a registration."""
    everyone = dict.fromkeys(IDENTITIES, 200)
    signed_in = {"anonymous": 401, "bob": 200, "alice": 200, "admin": 200}
    permitted = {"anonymous": 401, "bob": 403, "alice": 200, "admin": 200}
    own = {"anonymous": 401, "bob": 404, "alice": 200, "admin": 200}
    admins = {"anonymous": 401, "bob": 403, "alice": 403, "admin": 200}
    hello = {"inputs": {"name": "matrix"}}
    granary_task = {"name": "Scratch Granary task", "validator": {"schema": {"type": "object"}},
                    "jobDefinition": "scratch:1", "jobQueue": "q"}  # fmt: skip
    return [
        ("GET", "/", "/", None, everyone),
        ("GET", "/conformance", "/conformance", None, everyone),
        ("GET", "/processes", "/processes", None, signed_in),
        ("GET", "/processes/{process_id}", f"/processes/{RESTRICTED}", None, permitted),
        ("POST", "/processes/{process_id}/execution", f"/processes/{RESTRICTED}/execution", hello, permitted),
        ("POST", "/processes", "/processes", scratch_task("1.0.0"), admins | {"admin": 201}),
        ("PUT", "/processes/{process_id}", f"/processes/{SCRATCH}", scratch_task("2.0.0"), admins),
        ("DELETE", "/processes/{process_id}", f"/processes/{SCRATCH}", None, admins | {"admin": 204}),
        ("GET", "/jobs", "/jobs", None, signed_in),
        ("GET", "/jobs/{job_id}", f"/jobs/{r.ended}", None, own),
        ("GET", "/jobs/{job_id}/results", f"/jobs/{r.ended}/results", None, own),
        ("GET", "/jobs/{job_id}/outputs/{path}", f"/jobs/{r.ended}/outputs/{r.output}", None, own),
        ("GET", "/jobs/{job_id}/logs", f"/jobs/{r.ended}/logs", None, own),
        ("GET", "/jobs/{job_id}/metadata", f"/jobs/{r.ended}/metadata", None, own),
        ("DELETE", "/jobs/{job_id}", f"/jobs/{r.running}", None, own),
        ("POST", "/api/tasks", "/api/tasks", granary_task, admins),
        ("GET", "/api/tasks", "/api/tasks", None, signed_in),
        ("GET", "/api/tasks/{task_id}", f"/api/tasks/{r.task_id}", None, permitted),
        ("POST", "/api/executions", "/api/executions", {"taskId": r.task_id, "arguments": {"name": "matrix"}},
         permitted),
        ("GET", "/api/executions", "/api/executions", None, signed_in),
        ("GET", "/api/executions/{execution_id}", f"/api/executions/{r.ended}", None, own),
        # The webhook id is the credential there, as in Granary: a bearer token gives no right to it.
        ("POST", "/api/executions/{execution_id}/results/{hook}", f"/api/executions/{r.running}/results/forged",
         {"message": "forged"}, dict.fromkeys(IDENTITIES, 404)),
    ]  # fmt: skip


def call(api, method: str, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    if isinstance(body, str):
        return http.request(method, api.url + path, headers=headers | {"Content-Type": "application/yaml"},
                            content=body)  # fmt: skip
    return http.request(method, api.url + path, headers=headers, json=body)


def test_every_route_answers_each_identity_as_its_rights_say(api, people, restricted, tmp_path):
    document = http.get(f"{api.url}/openapi.json").json()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    table = routes(restricted)
    assert {(method, template) for method, template, *_ in table} == documented  # every route, no more

    answered: dict[tuple[str, str], dict[str, int]] = {}
    for method, template, path, body, expected in table:
        for who in IDENTITIES:
            response = call(api, method, path, people[who], body)
            answered.setdefault((method, template), {})[who] = response.status_code
            assert response.status_code == expected[who], (method, path, who, response.text)
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith('Bearer realm="granary"')
    print_matrix(answered, tmp_path)


def print_matrix(answered: dict[tuple[str, str], dict[str, int]], folder: Path) -> None:
    rows = [f"| {method} {template} | " + " | ".join(str(codes[w]) for w in IDENTITIES) + " |"
            for (method, template), codes in answered.items()]  # fmt: skip
    table = "\n".join(["| route | " + " | ".join(IDENTITIES) + " |", "|---" * 5 + "|", *rows])
    (folder / "matrix.md").write_text(table)
    print(f"\n{table}")


@pytest.mark.parametrize(
    "case",
    ["none", "not bearer", "unknown token", "expired", "wrong audience", "wrong issuer", "wrong signature",
     "alg none", "hs256 with the public key", "unknown key id", "no subject"],
)  # fmt: skip
def test_a_missing_or_invalid_identity_is_refused_with_a_challenge(api, case):
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    now = int(time.time())
    claims = {"iss": api.issuer, "aud": api.audience, "sub": "mallory", "exp": now + 600, "iat": now,
              "realm_access": {"roles": ["admin"]}}  # fmt: skip
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = api.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = {
        "none": None,
        "not bearer": "Basic " + base64.b64encode(b"admin:admin").decode(),
        "unknown token": "Bearer not-a-token-anyone-was-given",
        "expired": oidc_token(api, "mallory", ["admin"], exp=now - 3600),
        "wrong audience": oidc_token(api, "mallory", ["admin"], aud="another-service"),
        "wrong issuer": oidc_token(api, "mallory", ["admin"], iss="http://127.0.0.1/realms/elsewhere"),
        "wrong signature": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": api.kid}),
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": api.kid}),
        "hs256 with the public key": hs256(claims, public_pem, api.kid),
        "unknown key id": jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "rotated-away"}),
        "no subject": jwt.encode({k: v for k, v in claims.items() if k != "sub"}, api.key, algorithm="RS256",
                                 headers={"kid": api.kid}),
    }  # fmt: skip
    given = tokens[case]
    headers = {} if given is None else {"Authorization": given if " " in given else f"Bearer {given}"}
    for path in ("/processes", "/jobs", "/api/tasks"):
        refused = http.get(api.url + path, headers=headers)
        assert refused.status_code == 401, (case, path, refused.text)
        challenge = refused.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="granary"')
        assert ('error="invalid_token"' in challenge) == (case not in ("none", "not bearer"))
        assert refused.json()["type"].endswith("/unauthorized")
    registering = http.post(f"{api.url}/processes", headers=headers | {"Content-Type": "application/yaml"},
                            content=scratch_task("6.6.6"))  # fmt: skip
    assert registering.status_code == 401  # an admin role in a token that does not hold is no role at all


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """A token 'signed' with HMAC over the issuer's public key: the algorithm-confusion attack (PyJWT refuses to
    make one, so it is made by hand)."""
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + part(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def test_a_valid_oidc_token_gives_the_roles_of_its_claim_and_its_user_name(api, people, restricted):
    listed = {
        p["id"]
        for p in http.get(f"{api.url}/processes", headers=people["alice"], params={"limit": 1000}).json()["processes"]
    }
    assert RESTRICTED in listed and "hello" in listed
    by_bob = {
        p["id"]
        for p in http.get(f"{api.url}/processes", headers=people["bob"], params={"limit": 1000}).json()["processes"]
    }
    assert RESTRICTED not in by_bob and "hello" in by_bob  # the list shows what one may run
    keycloak_admin = bearer(oidc_token(api, "carol", ["admin"]))
    assert http.get(f"{api.url}/jobs/{restricted.ended}", headers=keycloak_admin).status_code == 200
    refused = execute(api, people["bob"], RESTRICTED, {"name": "bob"})
    assert refused.status_code == 403 and "ndvi-users" in refused.json()["detail"]


def test_jobs_are_seen_only_by_who_submitted_them_and_admins(api, people, restricted):
    before = {who: job_ids(api, people[who]) for who in ("bob", "alice", "admin")}
    mine = execute(api, people["bob"], "hello", {"name": "bob"})
    assert mine.status_code == 200, mine.text
    bobs = mine.headers["Location"].rsplit("/", 1)[1]
    assert job_ids(api, people["bob"]) == before["bob"] | {bobs}
    assert restricted.ended in before["alice"] and bobs not in job_ids(api, people["alice"])
    assert {bobs, restricted.ended} <= job_ids(api, people["admin"])

    # paging leaks nothing either: bob's pages end where his own jobs do
    page = http.get(f"{api.url}/jobs", headers=people["bob"], params={"limit": len(before["bob"]) + 1}).json()
    assert not [link for link in page["links"] if link["rel"] == "next"] and "numberMatched" not in page
    filtered = http.get(f"{api.url}/jobs", headers=people["bob"], params={"processID": RESTRICTED}).json()
    assert filtered["jobs"] == []
    granary = http.get(f"{api.url}/api/executions", headers=people["bob"], params={"limit": 1000}).json()
    assert {e["id"] for e in granary["results"]} == before["bob"] | {bobs}

    # another user's job answers exactly as one that never was
    someone_elses = http.get(f"{api.url}/jobs/{restricted.ended}/results", headers=people["bob"])
    never_was = http.get(f"{api.url}/jobs/00000000-0000-4000-8000-000000000000/results", headers=people["bob"])
    assert someone_elses.status_code == never_was.status_code == 404
    assert someone_elses.json()["type"] == never_was.json()["type"]
    forged = http.post(f"{api.url}/api/executions", headers=people["bob"],
                       json={"taskId": str(hello_task_id(api, people)), "arguments": {"name": "x"},
                             "tags": ["submitted-by:alice"]})  # fmt: skip
    assert forged.status_code == 400 and "submitted-by:" in forged.json()["msg"]


def job_ids(api, headers: dict[str, str]) -> set[str]:
    found: set[str] = set()
    url: str | None = f"{api.url}/jobs?limit=1000"
    while url:
        page = http.get(url, headers=headers).json()
        found |= {job["jobID"] for job in page["jobs"]}
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    return found


def hello_task_id(api, people) -> str:
    tasks = http.get(f"{api.url}/api/tasks", headers=people["bob"], params={"limit": 1000}).json()["results"]
    return next(t["id"] for t in tasks if t["name"] == "hello")


def test_the_submitter_is_recorded_on_the_run_its_results_and_its_provenance(api, people, restricted, client):
    from granary_flows.provenance import api_submitter

    flow_run = client.read_flow_run(restricted.ended)
    assert api_submitter(flow_run) == "alice" and "submitted-by:alice" in flow_run.tags  # the Prefect UI shows it
    results = http.get(f"{api.url}/jobs/{restricted.ended}/metadata", headers=people["alice"]).json()
    assert results["submitter"] == "alice"
    status = http.get(f"{api.url}/jobs/{restricted.ended}", headers=people["alice"]).json()
    assert status["submitter"] == "alice"
    item = http.get(status["stacItem"], headers=people["alice"]).json()
    assert item["properties"]["granary:submitter"] == "alice"


def test_runs_started_from_prefect_itself_record_that(api, people, client, runner):
    from helpers import execute as run_through_prefect

    flow_run = run_through_prefect(client, "hello", name="from the UI")
    assert flow_run.state.is_completed()
    # not this API's: no one but an admin sees it, and its provenance says where it came from
    assert http.get(f"{api.url}/jobs/{flow_run.id}", headers=people["bob"]).status_code == 404
    assert http.get(f"{api.url}/jobs/{flow_run.id}/metadata", headers=people["admin"]).json()["submitter"] == "prefect"


def test_every_registration_execution_dismissal_and_refusal_leaves_one_audit_line_without_secrets(
    api, people, restricted
):
    http.get(f"{api.url}/processes", headers=bearer("leaked-token-must-not-appear"))
    execute(api, people["bob"], RESTRICTED, {"name": "bob"})
    accepted = execute(api, people["alice"], RESTRICTED, {"name": "audit", "sleep": 60}, asynchronous=True)
    job = accepted.json()["jobID"]
    assert http.delete(f"{api.url}/jobs/{job}", headers=people["alice"]).status_code == 200
    http.post(f"{api.url}/processes", headers=people["alice"] | {"Content-Type": "application/yaml"},
              content=scratch_task("9.9.9"))  # fmt: skip

    def audit_lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in "".join(api.process.output).splitlines() if line.startswith('{"time"')]

    deadline = time.monotonic() + 30  # the API's output is read by a thread of its own
    while not any(line.get("target") == "/processes" and line.get("who") == "alice" for line in audit_lines()):
        assert time.monotonic() < deadline, "the last refusal was never audited"
        time.sleep(0.1)
    lines = audit_lines()
    said = "".join(api.process.output)
    for secret in (
        "leaked-token-must-not-appear",
        TOKENS["bob"],
        TOKENS["admin"],
        people["alice"]["Authorization"][7:],
    ):
        assert secret not in said
    assert all({"time", "who", "action", "target", "outcome"} <= set(line) for line in lines)

    def seen(**fields: Any) -> list[dict[str, Any]]:
        return [line for line in lines if fields.items() <= line.items()]

    assert seen(who=None, action="GET", target="/processes", outcome="refused", status=401)
    assert seen(who="bob", action="POST", target=f"/processes/{RESTRICTED}/execution", outcome="refused", status=403)
    assert len(seen(who="alice", action="execute", target=RESTRICTED, outcome="accepted", job=job)) == 1
    assert len(seen(who="alice", action="dismiss", target=job, outcome="dismissed")) == 1
    assert seen(who="alice", action="POST", target="/processes", outcome="refused", status=403)
    assert seen(who="root", action="register", target=RESTRICTED, outcome="registered")


def test_images_outside_the_operators_registries_are_not_registered(tmp_path, client):
    from helpers import task_copy

    foreign = task_copy("hello", tmp_path, "foreign-image", runtime={"docker": {"image": "evil.example/miner:1",
                                                                               "command": ["/bin/true"]}})  # fmt: skip
    done = granary("register", str(foreign), GRANARY_ALLOW_IMAGES="granary/,registry.example/team/")
    said = done.stdout + done.stderr
    assert done.returncode == 1
    assert "runtime.docker.image" in said and "evil.example/miner:1" in said and "GRANARY_ALLOW_IMAGES" in said
    from granary_flows.registry import Registry

    assert "foreign-image" not in {e.name for e in Registry(client).entries()}


def test_a_pinned_image_runs_as_registered_and_a_moved_tag_is_refused(tmp_path, client, docker_runtime):
    from granary_flows.definition import RuntimeKind
    from granary_flows.registry import Registry
    from granary_flows.store import ResultsStore

    engine = docker_runtime.client
    engine.images.get("granary/hello:1").tag("granary/pinned", "1")
    try:
        path = Path(tmp_path / "pinned.yaml")
        document = yaml.safe_load((ROOT / "deployments" / "hello.yaml").read_text())
        document["name"] = "pinned"
        document["runtime"]["docker"]["image"] = "granary/pinned:1"
        path.write_text(yaml.safe_dump(document))
        done = granary("register", str(path), GRANARY_PIN_IMAGES="true", GRANARY_ALLOW_IMAGES="granary/")
        assert done.returncode == 0, done.stdout
        registry = Registry(client)
        entry = registry.get("pinned")
        hello_id = engine.images.get("granary/hello:1").id
        assert entry.image_digest == hello_id
        served = {entry.deployment_id: registry.definition("pinned")}
        with runner_for(served, ResultsStore(), {RuntimeKind.DOCKER: docker_runtime}):
            first = wait_final(
                client, client.create_flow_run_from_deployment(entry.deployment_id, parameters={"name": "a"}).id
            )
            assert first.state.is_completed()
            engine.images.get("granary/ndvi:1").tag("granary/pinned", "1")  # the owner moves the tag
            since = time.time()
            moved = wait_final(
                client, client.create_flow_run_from_deployment(entry.deployment_id, parameters={"name": "b"}).id
            )
        assert moved.state.is_failed()
        assert "changed since the task was registered" in moved.state.message and hello_id in moved.state.message
        assert containers_of(docker_runtime, moved.id, since) == []  # nothing of the moved image ever ran
        from granary_flows import layout

        document = ResultsStore().read_json(layout.execution_document("pinned", str(first.id)))
        assert document["image_digest"] == hello_id
    finally:
        engine.images.remove("granary/pinned:1")


def granary(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "granary_flows.cli", *arguments], cwd=ROOT, text=True, check=False,
                          capture_output=True, env=os.environ | {"COLUMNS": "250"} | environment,
                          timeout=300)  # fmt: skip


def test_the_api_refuses_to_start_without_a_way_to_identify_users_and_says_so_when_switched_off(prefect_server):
    from helpers import granary_serve, read_until

    from granary_flows.server import free_port

    unset = ("GRANARY_API_AUTH", "GRANARY_AUTH_BLOCK")
    refused = granary("api", "--port", str(free_port()), GRANARY_API_AUTH="")
    assert refused.returncode != 0 and "GRANARY_API_AUTH" in refused.stdout + refused.stderr
    port = free_port()
    process = granary_serve("--port", str(port), command="api", unset=unset, GRANARY_API_AUTH="off")
    try:
        said = read_until(process, "granary api:", timeout=180)
        assert "authentication is off" in said
        from granary_flows.server import wait_until

        wait_until(lambda: http.get(f"http://127.0.0.1:{port}/conformance").status_code == 200, "api", process)
        landing = http.get(f"http://127.0.0.1:{port}/").json()
        assert landing["authentication"].startswith("off")
        assert http.get(f"http://127.0.0.1:{port}/processes").status_code == 200
    finally:
        stop_process(process)


def test_prefect_server_with_its_own_credentials_is_no_side_door(tmp_path, docker_runtime):
    """The production set-up: Prefect's server checks PREFECT_SERVER_API_AUTH_STRING; the runner, registration and
    `granary api` pass PREFECT_API_AUTH_STRING; a request without it is refused."""
    from helpers import granary_serve, read_until, write_identities

    from granary_flows.server import free_port, local_server, wait_until

    credentials = "granary:" + base64.b64encode(b"server-secret").decode()
    home = {"PREFECT_HOME": str(tmp_path / "prefect"), "GRANARY_HOME": str(tmp_path / "home")}
    with local_server(
        log_file=tmp_path / "server.log", extra_env=home | {"PREFECT_SERVER_API_AUTH_STRING": credentials}
    ) as url:
        assert httpx.post(f"{url}/deployments/filter", json={}).status_code == 401
        assert httpx.post(f"{url}/flow_runs/filter", json={}, auth=("granary", "guess")).status_code == 401
        client_env = home | {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": credentials}
        without = granary("register", "deployments/hello.yaml", **home, PREFECT_API_URL=url)
        assert without.returncode == 1 and "401" in without.stdout + without.stderr
        registered = granary("register", "deployments/hello.yaml", **client_env)
        assert registered.returncode == 0, registered.stdout + registered.stderr

        identities = write_identities(tmp_path / "identities", {"issuer": "x", "audience": "y", "kid": "k"})
        port = free_port()
        serve = granary_serve("--limit", "2", **client_env)
        api = granary_serve("--port", str(port), command="api", **client_env, GRANARY_API_AUTH="tokens",
                            GRANARY_API_URL=f"http://127.0.0.1:{port}",
                            GRANARY_API_TOKENS_FILE=str(identities.tokens_file))  # fmt: skip
        try:
            read_until(serve, "waiting for runs", timeout=120)
            read_until(api, "granary api:", timeout=180)
            wait_until(lambda: http.get(f"http://127.0.0.1:{port}/conformance").status_code == 200, "api", api)
            done = http.post(f"http://127.0.0.1:{port}/processes/hello/execution", headers=bearer(TOKENS["alice"]),
                             json={"inputs": {"name": "behind auth"}})  # fmt: skip
            assert done.status_code == 200, done.text
            greeting = http.get(done.json()["greeting"]["href"], headers=bearer(TOKENS["alice"]))
            assert greeting.text == "Hello, behind auth!\n"
        finally:
            stop_process(api)
            stop_process(serve)


def test_no_request_the_api_document_allows_makes_the_server_fail(api, people):
    """Schemathesis, from the OpenAPI document, every operation as no one, as a user without roles and as an admin:
    any status but a 5xx (a synchronous execution's own 500 job-failed excepted: a job failing is an answer)."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(routes(SimpleNamespace(ended="", running="", task_id="", output="")))

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            for who in ("anonymous", "bob", "admin"):
                response = case.call(headers=people[who], timeout=60)
                if response.status_code == 500 and response.json().get("type", "").endswith("/job-failed"):
                    continue
                case.validate_response(response, checks=[not_a_server_error])

        no_server_error()


def test_a_signed_picture_link_opens_that_picture_alone_until_it_expires(api, people, runner, client):
    """The quicklook link on Prefect's run page needs no token; its signature opens that one file, until its expiry,
    and nothing else: another file, another job, a later expiry or a forged signature are each refused."""
    import re
    from urllib.parse import parse_qs, urlsplit

    from helpers import SAMPLE_TIFF, artifacts_of

    done = execute(api, people["bob"], "ndvi", {"redBand": 3, "nirBand": 4, "tiffLocation": SAMPLE_TIFF.as_uri()})
    assert done.status_code == 200, done.text
    job = done.headers["Location"].rsplit("/", 1)[1]
    [markdown] = [a.data for a in artifacts_of(client, job) if a.key == "ndvi-results"]
    [link] = re.findall(r"!\[quicklook of ndvi\]\((http[^)]+signature=[0-9a-f]+)\)", markdown)
    picture = http.get(link)  # no token
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    path = link.split("?")[0]
    query = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
    expires, signature = int(query["expires"]), query["signature"]
    assert 6.9 * 86400 < expires - time.time() <= 7 * 86400  # a week, S3's longest presigned link
    signed = f"expires={expires}&signature={signature}"
    assert http.get(f"{path.rsplit('/', 1)[0]}/ndvi.tif?{signed}").status_code == 401
    assert http.get(f"{path}?expires={expires}&signature={'0' * 64}").status_code == 401
    assert http.get(f"{path}?expires={expires + 86400}&signature={signature}").status_code == 401
    other = execute(api, people["alice"], "hello", {"name": "alice"}).headers["Location"].rsplit("/", 1)[1]
    assert http.get(f"{api.url}/jobs/{other}/outputs/{path.rsplit('/', 1)[1]}?{signed}").status_code == 401


def test_a_block_named_in_the_environment_overrides_the_environments_own_settings(client, monkeypatch):
    """Workers and API instances on other hosts share one policy and one authentication through Prefect blocks."""
    from granary_flows.auth import current_auth
    from granary_flows.blocks import GranaryAuth, GranaryPolicy
    from granary_flows.policy import current_policy

    GranaryPolicy(file_roots=["/srv/scenes"], max_input_mib=64).save("shared-policy", overwrite=True)
    GranaryAuth(mode="oidc", issuer="https://idp.example/realms/x", audience="granary").save(
        "shared-auth", overwrite=True
    )
    monkeypatch.setenv("GRANARY_ALLOW_FILE_ROOTS", "/somewhere/else")
    monkeypatch.setenv("GRANARY_API_AUTH", "off")
    assert current_policy().file_roots == ["/somewhere/else"] and current_auth().mode == "off"
    monkeypatch.setenv("GRANARY_POLICY_BLOCK", "shared-policy")
    monkeypatch.setenv("GRANARY_AUTH_BLOCK", "shared-auth")
    policy, auth = current_policy(), current_auth()
    assert policy.file_roots == ["/srv/scenes"] and policy.max_input_mib == 64
    assert (auth.mode, auth.issuer, auth.audience) == ("oidc", "https://idp.example/realms/x", "granary")


def test_a_stored_token_digest_is_not_a_credential(api):
    """Whoever reads the tokens file (the quickstart's holds the admin's digest) learns digests, not tokens: each
    digest presented, with its prefix or without, is refused as any wrong token is."""
    import hashlib
    import json

    stored = json.loads(api.tokens_file.read_text())
    presented = []
    for entry in stored:
        token = entry["token"]
        digest = (
            token.removeprefix("sha256:") if token.startswith("sha256:") else hashlib.sha256(token.encode()).hexdigest()
        )
        presented += [f"sha256:{digest}", digest, f"SHA256:{digest.upper()}"]
    for credential in presented:
        answered = http.get(f"{api.url}/processes", headers=bearer(credential))
        assert answered.status_code == 401, (credential, answered.status_code)
    assert http.get(f"{api.url}/processes", headers=bearer(TOKENS["admin"])).status_code == 200  # the token is


def sign_in(url: str, headers: dict[str, str], data: dict[str, str]) -> httpx.Response:
    """A browser's sign-in, kept out of the module's client (whose jar would send its cookie with every later call)."""
    return httpx.post(url, headers=headers, data=data, timeout=60)


def test_a_submitted_by_tag_written_in_prefect_makes_nobody_an_owner(api, people, client, runner):
    """A run created in Prefect with alice's `submitted-by` tag (the API's own tag, copied) is not alice's job: she
    neither lists nor opens it, and the admin sees it as started from Prefect. Her own job, through the API, is."""
    from helpers import wait_final

    deployment = client.read_deployment_by_name("hello/hello")
    forged = client.create_flow_run_from_deployment(
        deployment.id, parameters={"name": "forged"}, tags=["granary-api", "submitted-by:alice"]
    )
    hers = execute(api, people["alice"], "hello", {"name": "hers"}).headers["Location"].rsplit("/", 1)[1]
    wait_final(client, forged.id)
    listed = http.get(f"{api.url}/jobs", headers=people["alice"], params={"limit": 1000}).json()["jobs"]
    assert hers in [job["jobID"] for job in listed] and str(forged.id) not in [job["jobID"] for job in listed]
    assert http.get(f"{api.url}/jobs/{forged.id}", headers=people["alice"]).status_code == 404
    assert http.get(f"{api.url}/jobs/{hers}", headers=people["alice"]).json()["submitter"] == "alice"
    seen = http.get(f"{api.url}/jobs/{forged.id}", headers=people["admin"]).json()
    assert "submitter" not in seen
    provenance = http.get(f"{api.url}/jobs/{forged.id}/metadata", headers=people["admin"]).json()
    assert provenance["submitter"] == "prefect"
    body = {"taskId": str(deployment.id), "arguments": {"name": "x"}, "tags": ["granary-owner:x"]}
    asked = http.post(f"{api.url}/api/executions", headers=people["bob"], json=body)
    assert asked.status_code == 400 and "the API's own" in asked.json()["msg"]


def test_two_users_idempotency_keys_never_meet(api):
    """User `a:b` sending key `Z` and user `a` sending key `b:Z` once made one key: each now gets a job of their own."""
    first = bearer(oidc_token(api, "a:b", []))
    second = bearer(oidc_token(api, "a", []))
    created = [
        http.post(f"{api.url}/processes/hello/execution", json={"inputs": {"name": who}},
                  headers=headers | {"Prefer": "respond-async", "Idempotency-Key": key}).json()["jobID"]
        for who, headers, key in (("a:b", first, "Z"), ("a", second, "b:Z"))
    ]  # fmt: skip
    assert created[0] != created[1]
    assert http.get(f"{api.url}/jobs/{created[0]}", headers=second).status_code == 404


def test_another_users_job_and_a_missing_one_take_as_long_to_refuse(api, people, restricted):
    """Over 100 interleaved tries, bob asking for alice's job and for one that never was: both 404, and their median
    times differ by less than the noise between two halves of the same kind of request."""
    import statistics
    import uuid

    def timed(job: str) -> float:
        started = time.perf_counter()
        answer = http.get(f"{api.url}/jobs/{job}", headers=people["bob"])
        assert answer.status_code == 404
        return time.perf_counter() - started

    hers, missing = [], []
    for _ in range(110):
        hers.append(timed(restricted.ended))
        missing.append(timed(str(uuid.uuid4())))
    hers, missing = hers[10:], missing[10:]  # the first few warm the connection
    difference = abs(statistics.median(hers) - statistics.median(missing))
    noise = abs(statistics.median(missing[::2]) - statistics.median(missing[1::2])) + 0.001
    print(f"median 404: another's {statistics.median(hers) * 1000:.2f} ms, missing "
          f"{statistics.median(missing) * 1000:.2f} ms")  # fmt: skip
    assert difference < max(3 * noise, 0.15 * statistics.median(missing)), (difference, noise)


def test_a_key_given_twice_is_refused_naming_it(api, people, tmp_path):
    from typer.testing import CliRunner

    from granary_flows.cli import app

    body = b'{"inputs": {"name": "first", "name": "second"}}'
    as_json = people["bob"] | {"Content-Type": "application/json"}
    answered = http.post(f"{api.url}/processes/hello/execution", headers=as_json, content=body)
    assert answered.status_code == 400 and "'name' is given twice" in answered.json()["detail"]
    document = (ROOT / "deployments" / "hello.yaml").read_text() + "\nversion: 9.9.9\n"
    registered = http.post(f"{api.url}/processes", headers=people["admin"] | {"Content-Type": "application/yaml"},
                           content=document)  # fmt: skip
    assert registered.status_code == 400 and "the key 'version' is given twice" in registered.json()["detail"]
    (tmp_path / "twice.yaml").write_text(document)
    checked = CliRunner().invoke(app, ["check", str(tmp_path / "twice.yaml")])
    assert checked.exit_code == 1 and "the key 'version' is given twice" in checked.output
    given = CliRunner().invoke(app, ["run", "hello", "--params", '{"name": "a", "name": "b"}'])
    assert given.exit_code == 1 and "--params" in given.output and "'name' is given twice" in given.output


def test_the_sign_in_cookie_is_a_session_that_expires_and_that_logout_ends(api):
    """The cookie holds no token, lives for the session's hours, is HTTP-only and same-site; it opens the pages until
    /logout ends it, after which the same cookie opens nothing; a cookie changed by one letter opens nothing."""
    own = {"Origin": api.url}
    signed_in = sign_in(f"{api.url}/login", headers=own, data={"token": TOKENS["bob"]})
    assert signed_in.status_code == 200
    cookie = signed_in.headers["set-cookie"]
    session = signed_in.cookies["granary_session"]
    assert (
        TOKENS["bob"] not in cookie
        and "bob-token" not in base64.urlsafe_b64decode(session.split(".")[0] + "==").decode()
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path", "samesite"} <= attributes and "secure" not in attributes
    assert "Max-Age=43200" in cookie and "SameSite=strict" in cookie
    browser = {"Cookie": f"granary_session={session}"}
    page = http.get(f"{api.url}/jobs?f=html", headers=browser)
    assert page.status_code == 200 and "signed in as bob" in page.text and "sign out" in page.text
    forged = session[:-1] + ("0" if session[-1] != "0" else "1")
    assert http.get(f"{api.url}/jobs", headers={"Cookie": f"granary_session={forged}"}).status_code == 401
    assert http.post(f"{api.url}/logout", headers={"Origin": "http://evil.example"} | browser).status_code == 403
    ended = http.post(f"{api.url}/logout", headers=own | browser)
    assert ended.status_code == 200 and 'granary_session=""' in ended.headers["set-cookie"]
    assert http.get(f"{api.url}/jobs", headers=browser).status_code == 401
    asked = http.get(f"{api.url}/jobs/x?f=html", headers=browser, follow_redirects=False)
    assert asked.status_code == 303 and asked.headers["location"].endswith("/login?next=%2Fjobs%2Fx%3Ff%3Dhtml")


def test_the_cookie_is_secure_over_https_behind_a_proxy_the_operator_trusts(api, identities):
    from helpers import granary_serve, read_until

    from granary_flows.server import free_port, wait_until

    port = free_port()
    trusted = granary_serve("--port", str(port), command="api", GRANARY_API_AUTH="tokens",
                            GRANARY_API_TOKENS_FILE=str(identities.tokens_file),
                            GRANARY_API_TRUSTED_PROXIES="127.0.0.1")  # fmt: skip
    try:
        read_until(trusted, "granary api:", timeout=180)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http.get(f"{url}/conformance").status_code == 200, "api", trusted)
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": f"127.0.0.1:{port}"}
        behind = sign_in(f"{url}/login", headers=proxied | {"Origin": f"https://127.0.0.1:{port}"},
                           data={"token": TOKENS["bob"]})  # fmt: skip
        assert behind.status_code == 200 and "; secure" in behind.headers["set-cookie"].lower()
    finally:
        stop_process(trusted)
    spoofed = sign_in(f"{api.url}/login", headers={"X-Forwarded-Proto": "https", "Origin": api.url},
                        data={"token": TOKENS["bob"]})  # fmt: skip
    assert spoofed.status_code == 200 and "secure" not in spoofed.headers["set-cookie"].lower()  # not trusted there


def test_rotating_the_signing_key_ends_old_links_and_sessions_and_spares_running_jobs_webhooks(
    api, people, restricted, runner
):
    """`granary keys rotate`: within the keys' 30 s, a link signed before no longer opens by itself and every session
    signs in again; a job that was running keeps its webhook; links signed after open."""
    from granary_flows import keys
    from granary_flows.webhooks import output_link, webhook_url

    before = output_link(api.url, restricted.ended, restricted.output)
    assert http.get(before).status_code == 200
    running = execute(api, people["admin"], "docker-probe", {"sleep": 120}, asynchronous=True).json()["jobID"]
    hook = webhook_url(running)
    session = sign_in(f"{api.url}/login", headers={"Origin": api.url}, data={"token": TOKENS["bob"]}).cookies
    assert http.get(f"{api.url}/jobs", cookies=session).status_code == 200

    rotated = granary("keys", "rotate")
    assert rotated.returncode == 0 and "signing key rotated" in rotated.stdout, rotated.stderr
    keys._cache.clear()  # this process's runner signs with the new key at once
    deadline = time.monotonic() + keys.KEYS_TTL + 15
    while http.get(before).status_code == 200:
        assert time.monotonic() < deadline, "the old key still opens links"
        time.sleep(1)
    assert http.get(before, headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303  # sign in
    assert http.get(f"{api.url}/jobs", cookies=session).status_code == 401
    assert http.get(output_link(api.url, restricted.ended, restricted.output)).status_code == 200
    assert hook is not None and webhook_url(running) != hook
    assert http.post(hook, json={"message": "still mine"}).status_code == 200
    http.delete(f"{api.url}/jobs/{running}", headers=people["admin"])
