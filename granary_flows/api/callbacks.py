"""OGC's callback conformance class: a job's `subscriber` is told when it runs (`inProgressUri`, its statusInfo), when
it succeeds (`successUri`, its results document) and when it fails (`failedUri`, its statusInfo with the exception).

Notifications never hold up an execution: a watcher thread follows subscribed jobs and a sender posts each
notification, retried with backoff; a subscriber that does not answer is given up on after its retries and loses
nothing else. Subscriptions are written to the results store, so that a restarted API goes on with them. Subscriber
addresses obey the operator's policy (public addresses, unless allowed), as inputs do.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
from pydantic import BaseModel

from granary_flows.api.execute import Subscriber
from granary_flows.errors import GranaryError
from granary_flows.outbound import OutboundRefused, pinned_request
from granary_flows.policy import current_policy

logger = logging.getLogger("granary.api.callbacks")
SUBSCRIPTIONS = ".granary/subscribers"
BACKOFF = [1, 2, 4, 8, 16, 32, 60, 120, 300]  # seconds between attempts: about 9 minutes in all


class Subscription(BaseModel):
    job_id: str
    process_id: str
    base: str
    subscriber: Subscriber
    told_running: bool = False


def check_subscriber(subscriber: Subscriber) -> None:
    """Raises RequestProblem when a subscriber address is not one this server may call."""
    from granary_flows.api.execute import RequestProblem

    policy = current_policy()
    problems = []
    for field in ("successUri", "inProgressUri", "failedUri"):
        uri = getattr(subscriber, field)
        if uri is None:
            continue
        try:
            with httpx.Client() as client:
                pinned_request(client, "POST", uri, policy)
        except OutboundRefused as err:
            problems.append(f"subscriber.{field}: {err}")
    if problems:
        raise RequestProblem(problems)


class Callbacks:
    """Follows subscribed jobs and notifies their subscribers.

    Args:
        context: the API's shared context (Prefect client, results store).
        interval: seconds between looks at the subscribed jobs.
    """

    def __init__(self, context: Any, interval: float = 0.5):
        self.context = context
        self.interval = interval
        self.pending: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._senders = ThreadPoolExecutor(8, "granary-callback")
        self._thread = threading.Thread(target=self._watch, daemon=True, name="granary-callbacks")

    def start(self) -> None:
        for document in self.context.store.read_all_json(SUBSCRIPTIONS):
            try:
                subscription = Subscription.model_validate(document)
            except ValueError:
                continue
            self.pending[subscription.job_id] = subscription
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._senders.shutdown(wait=False, cancel_futures=True)

    def subscribe(self, job_id: str, subscriber: Subscriber, process_id: str, base: str) -> None:
        subscription = Subscription(job_id=job_id, process_id=process_id, base=base, subscriber=subscriber)
        self.context.store.write_json(f"{SUBSCRIPTIONS}/{job_id}.json", subscription.model_dump(mode="json"))
        with self._lock:
            self.pending[job_id] = subscription

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            for subscription in list(self.pending.values()):
                try:
                    self._look(subscription)
                except Exception as err:  # a server away: the next look tries again
                    logger.debug("could not look at job %s: %s", subscription.job_id, err)

    def _look(self, subscription: Subscription) -> None:
        from granary_flows.api.jobs import JobStatus, status_info, status_of

        flow_run = self.context.client.read_flow_run(UUID(subscription.job_id))
        status = status_of(flow_run)
        info = status_info(flow_run, subscription.process_id, subscription.base)
        wanted = subscription.subscriber
        if status is JobStatus.RUNNING and not subscription.told_running:
            subscription.told_running = True
            if wanted.inProgressUri:
                self._send(wanted.inProgressUri, info)
        if status in (JobStatus.ACCEPTED, JobStatus.RUNNING):
            return
        if status is JobStatus.SUCCESSFUL and wanted.successUri:
            self._send(wanted.successUri, self._results(flow_run, subscription) or info)
        elif status in (JobStatus.FAILED, JobStatus.DISMISSED) and wanted.failedUri:
            reason = (flow_run.state.message if flow_run.state else None) or status.value
            exception = {"type": "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/job-failed",
                         "title": f"the job {status.value}", "detail": reason}  # fmt: skip
            self._send(wanted.failedUri, info | {"exception": exception})
        with self._lock:
            self.pending.pop(subscription.job_id, None)
        self.context.store.remove(f"{SUBSCRIPTIONS}/{subscription.job_id}.json")

    def _results(self, flow_run: Any, subscription: Subscription) -> dict[str, Any] | None:
        from granary_flows.api.execute import Links, outputs_document

        try:
            definition = self.context.definition(subscription.process_id)
            document = self.context.results_document(flow_run, subscription.process_id)
            links = Links(self.context.store, subscription.base, subscription.process_id, str(flow_run.id))
            return outputs_document(definition, document, {}, links, self.context.store.read_bytes)
        except (GranaryError, OSError, ValueError):
            return None

    def _send(self, uri: str, document: dict[str, Any]) -> None:
        self._senders.submit(self._deliver, uri, document)

    def _deliver(self, uri: str, document: dict[str, Any]) -> None:
        policy = current_policy()
        for attempt, pause in enumerate([0, *BACKOFF]):
            if self._stop.wait(pause):
                return
            try:
                with httpx.Client(timeout=10, follow_redirects=False, trust_env=False) as client:
                    response = client.send(pinned_request(client, "POST", uri, policy, json=document))
                if response.status_code < 500:
                    if response.status_code >= 400:
                        logger.warning("subscriber %s refused a notification (%d)", uri, response.status_code)
                    return
            except OutboundRefused as err:
                logger.warning("subscriber %s refused by the policy: %s", uri, err)
                return
            except httpx.HTTPError as err:
                logger.info("subscriber %s did not answer (attempt %d): %s", uri, attempt + 1, err)
        logger.warning("subscriber %s given up on after %d attempts", uri, len(BACKOFF) + 1)
