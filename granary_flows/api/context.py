"""What every request of `granary api` shares: the Prefect client, the registry (read through a short cache), the
results store, the authenticator, and how answers are negotiated (JSON, or HTML for a browser)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from granary_flows.api.identity import Authenticator, Identity, Unauthenticated, may_see
from granary_flows.api.jobs import submitter_tags
from granary_flows.api.sessions import SESSION_COOKIE, Sessions
from granary_flows.blocks import Entry
from granary_flows.documents import ResultsDocument, parse_results, read_results
from granary_flows.errors import GranaryError, UnknownTask
from granary_flows.loading import Definition
from granary_flows.provenance import api_submitter
from granary_flows.registry import Registry
from granary_flows.store import ResultsStore

EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0"
MAX_OFFSET = 10**9  # the deepest page a listing goes to: Prefect's database refuses offsets past 64 bits
logger = logging.getLogger("granary.api")
REGISTRY_TTL = 2.0  # seconds a registry listing is reused; registrations through this API refresh it at once


class ApiSettings(BaseModel):
    """`granary api`'s own settings."""

    title: str = "granary-flows"
    description: str = "Containerized geospatial algorithms, run on Docker or AWS Batch through Prefect"
    # How clients reach it (GRANARY_API_URL), when behind a proxy; and how long a synchronous execute waits.
    public_url: str | None = Field(default_factory=lambda: os.environ.get("GRANARY_API_URL"))
    sync_timeout: float = Field(default_factory=lambda: float(os.environ.get("GRANARY_API_SYNC_TIMEOUT", "300")))
    results: str | None = None


class ApiError(GranaryError):
    """An answer other than success, as an OGC exception (RFC 7807)."""

    def __init__(self, status: int, kind: str, title: str, detail: str = "", headers: dict[str, str] | None = None):
        self.status = status
        self.kind = kind if kind.startswith("http") else f"{EXCEPTIONS}/{kind}"
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{title}: {detail}" if detail else title)

    def document(self) -> dict[str, Any]:
        found = {"type": self.kind, "title": self.title, "status": self.status}
        return found | ({"detail": self.detail} if self.detail else {})


class Context:
    """The state `granary api` keeps between requests; nothing here is a copy of a job (Prefect holds those)."""

    def __init__(self, client: SyncPrefectClient, settings: ApiSettings, authenticator: Authenticator):
        self.client = client
        self.settings = settings
        self.authenticator = authenticator
        self.store = ResultsStore(settings.results)
        self.sessions = Sessions(self.store)
        self.registry = Registry(client)
        self._entries: dict[str, Entry] | None = None  # None: the next request reads the registry itself
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._cold = threading.Lock()
        self._generation = 0  # a listing read before a registration through this API is not kept after it

    def entries(self, fresh: bool = False) -> dict[str, Entry]:
        """Every registered task and pipeline, by name.

        A listing older than REGISTRY_TTL is still answered while one thread reads the next one: under load, a
        registry read takes as long as any request to Prefect's server, and every request queued behind it.
        """
        if fresh:
            return self._read()
        listing = self._entries
        if listing is None:
            with self._cold:  # at start-up and after a registration: one read for all who arrive meanwhile
                listing = self._entries
                if listing is None:
                    return self._read()
        if time.monotonic() - self._read_at > REGISTRY_TTL and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, name="granary-registry-refresh", daemon=True).start()
        return dict(listing)

    def forget(self) -> None:
        """After a registration through this API: its very next request sees it."""
        with self._lock:
            self._generation += 1
            self._entries = None

    def _read(self) -> dict[str, Entry]:
        generation, read_at = self._generation, time.monotonic()
        listing = {entry.name: entry for entry in self.registry.entries()}
        with self._lock:
            if generation == self._generation:
                self._entries, self._read_at = listing, read_at
        return dict(listing)

    def _refresh(self) -> None:
        try:
            self._read()
        except Exception:  # the server did not answer: the listing in hand stays, and a later request tries again
            logger.warning("could not refresh the registry listing", exc_info=True)
        finally:
            self._refreshing.release()

    def entry(self, name: str) -> Entry:
        found = self.entries().get(name) or self.entries(fresh=True).get(name)
        if found is None:
            raise ApiError(404, "no-such-process", "no such process", f"no process named {name!r} is registered")
        return found

    def definition(self, name: str) -> Definition:
        entry = self.entry(name)
        try:
            return self.registry.linked(entry.model())
        except UnknownTask as err:
            raise ApiError(500, "server-error", "the process cannot run", str(err)) from err

    def deployment_ids(self) -> list[UUID]:
        return [UUID(str(entry.deployment_id)) for entry in self.entries().values() if entry.deployment_id]

    def process_of(self, flow_run: FlowRun) -> str | None:
        """The registered process a run belongs to, or None for a run of anything else."""
        by_deployment = {str(entry.deployment_id): name for name, entry in self.entries().items()}
        found = by_deployment.get(str(flow_run.deployment_id))
        if found is None:
            by_deployment = {str(e.deployment_id): n for n, e in self.entries(fresh=True).items()}
            found = by_deployment.get(str(flow_run.deployment_id))
        return found

    def job(self, job_id: str, identity: Identity) -> tuple[FlowRun, str]:
        """A job this identity may see, and its process. Anyone else's job is as absent as one that never was, and
        takes as long to say so: a user's job is looked for with one query for a run of that id among the user's own
        runs, which finds nothing in the same way for both.

        Raises:
            ApiError: 404 no-such-job.
        """
        absent = ApiError(404, "no-such-job", "no such job", f"no job {job_id!r}")
        try:
            run_id = UUID(job_id)
        except ValueError as err:
            raise absent from err
        if identity.admin:
            return self.job_by_signed_link(job_id)
        own = FlowRunFilter(
            id=FlowRunFilterId(any_=[run_id]), tags=FlowRunFilterTags(all_=submitter_tags(identity.subject))
        )
        found = self.client.read_flow_runs(flow_run_filter=own, limit=1)
        process = self.process_of(found[0]) if found else None
        if process is None or not may_see(identity, api_submitter(found[0])):
            raise absent
        return found[0], process

    def job_by_signed_link(self, job_id: str) -> tuple[FlowRun, str]:
        """A job whatever its owner: for the admin, and for a signed link to one of its files (`webhooks.output_link`),
        whose signature stands for the right.

        Raises:
            ApiError: 404 no-such-job.
        """
        absent = ApiError(404, "no-such-job", "no such job", f"no job {job_id!r}")
        try:
            flow_run = self.client.read_flow_run(UUID(job_id))
        except (ObjectNotFound, ValueError) as err:
            raise absent from err
        process = self.process_of(flow_run)
        if process is None:
            raise absent
        return flow_run, process

    def results_document(self, flow_run: FlowRun, process_id: str) -> ResultsDocument:
        """A job's results document (an execution's or a pipeline run's).

        Raises:
            ApiError: 500 when it can be read neither from the results root nor from the run's state.
        """
        found = self.find_results(flow_run, process_id)
        if found is None:
            raise ApiError(
                500,
                "server-error",
                "the results cannot be read",
                "set GRANARY_RESULTS_URI (or GRANARY_RESULTS_BLOCK) to the runner's results root",
            )
        return found

    def find_results(self, flow_run: FlowRun, process_id: str) -> ResultsDocument | None:
        """A job's results document from the results root or else its run's persisted result; None without one."""
        try:
            return read_results(self.store, process_id, str(flow_run.id))
        except (FileNotFoundError, OSError, ValueError):
            pass
        if flow_run.state is None:
            return None
        try:
            return parse_results(flow_run.state.result())  # the runner's results root may not be this API's
        except Exception:
            return None

    def log_tail(self, job_id: str, count: int) -> list[str]:
        """A job's last `count` log lines, oldest first (for its page)."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        logs = self.client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(job_id)])),
            sort=LogSort.TIMESTAMP_DESC,
            limit=count,
            offset=0,
        )
        return [f"{log.timestamp:%H:%M:%S} {log.message}" for log in reversed(logs)]

    def base_url(self, request: Request) -> str:
        return (self.settings.public_url or str(request.base_url)).rstrip("/")

    def identify(self, request: Request) -> Identity:
        """Who asks: the bearer token of the Authorization header, else the browser's session cookie (`sessions`).

        Raises:
            ApiError: 401 for neither, or one that does not hold.
        """
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(SESSION_COOKIE)
        if authorization is None and cookie:
            session = self.sessions.read(cookie)
            identity = self.authenticator.identify_session(session) if session else None
            if identity is not None:
                return identity
        return self._identified(authorization)

    def signed_in(self, request: Request) -> Identity | None:
        """Who a page is shown to, when anybody: for its header."""
        try:
            return getattr(request.state, "identity", None) or self.identify(request)
        except ApiError:
            return None

    def identify_token(self, token: str) -> Identity:
        return self._identified(f"Bearer {token}")

    def _identified(self, authorization: str | None) -> Identity:
        try:
            return self.authenticator.identify(authorization)
        except Unauthenticated as err:
            challenge = 'Bearer realm="granary"' + (', error="invalid_token"' if err.invalid else "")
            raise ApiError(
                401, "unauthorized", "authentication required", str(err), {"WWW-Authenticate": challenge}
            ) from err


def wants_html(request: Request) -> bool:
    """`f=html`, or a browser that asks for HTML before JSON; anything else gets JSON."""
    asked = request.query_params.get("f")
    if asked:
        return asked.lower() in ("html", "text/html")
    accept = request.headers.get("accept", "")
    html, json_ = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json_ < 0 or html < json_)


def answer(request: Request, document: Any, page: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """JSON, or the same document as an HTML page when a browser asks."""
    if wants_html(request):
        from granary_flows.api.html import render

        return HTMLResponse(render(page, document, request), status_code=status, headers=headers)
    return JSONResponse(document, status_code=status, headers=headers)
