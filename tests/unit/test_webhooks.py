"""Webhook tries against httpx.MockTransport on a real spool file, with an
injected clock: the signature (checked with `hmac` here), headers, the retry
schedule, redirects, leases, one-try rounds, the sender thread, and that the
secret never reaches the spool."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

import httpx
import pytest

import zmm
from tests.clocks import FakeClock
from tests.conftest import wait_until
from zmm import intake
from zmm.jobs import JobState
from zmm.store import Store
from zmm.worker.webhooks import SIGNATURE_HEADER, WebhookSender, deliver_due, retry_delay, verify

URL = "http://hooks.test/h"
SECRET = "s3cr3t-value-7f1c2b9e"
START = 1_900_000_000.0


class Endpoint:
    """A MockTransport handler that records requests and answers from a list."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, httpx.Response) else httpx.Response(answer)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def finished_job(settings, spool: Store, status: str = "cancelled", url: str = URL) -> str:
    """A job with a webhook moved to `status`, which writes its outbox row."""
    (job,) = spool.enqueue(intake.build({"prompt": "hook", "size": "64x64", "steps": "3",
                                         "webhook": url}, settings))
    if status == "cancelled":
        spool.cancel([job.id])
    else:
        spool.claim("test-worker", lease_s=60, aging_s=600, only_ids=[job.id])
        spool.transition(job.id, JobState(status), expect=JobState.RUNNING)
    return job.id


def sender(settings, clock, endpoint, secret: str | None = SECRET) -> WebhookSender:
    environ = {"ZMM_WEBHOOK_SECRET": secret} if secret else {}
    return WebhookSender(settings, transport=endpoint.transport, clock=clock, environ=environ)


def webhook_events(spool: Store, job_id: str) -> list[dict]:
    return [event for event in spool.events(job_id) if event["kind"] == "webhook"]


def test_signature_verifies_with_an_independent_hmac_and_headers_are_set(settings, spool, clock):
    job_id = finished_job(settings, spool, status="succeeded")
    endpoint = Endpoint(204)
    webhooks = sender(settings, clock, endpoint)
    assert webhooks.run_once() is None  # delivered: nothing left pending
    webhooks.close()
    (request,) = endpoint.requests
    (delivery,) = spool.webhook_deliveries(job_id)
    assert request.method == "POST" and str(request.url) == URL
    assert request.content == delivery.body.encode("utf-8")
    expected = "sha256=" + hmac.new(SECRET.encode("utf-8"), request.content,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert verify(request.content, SECRET, request.headers[SIGNATURE_HEADER])
    assert not verify(request.content + b" ", SECRET, request.headers[SIGNATURE_HEADER])
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"zmm/{zmm.__version__}"
    assert request.headers["x-zmm-event"] == "job.succeeded"
    assert request.headers["x-zmm-delivery"] == delivery.delivery_id
    body = json.loads(request.content)
    assert set(body) == {"event", "delivery_id", "job"}
    assert body["event"] == "job.succeeded" and body["delivery_id"] == delivery.delivery_id
    assert body["job"]["id"] == job_id and body["job"]["status"] == "succeeded"
    assert (delivery.status, delivery.tries, delivery.claimed_by) == ("delivered", 1, None)
    assert delivery.finished_at is not None
    (event,) = webhook_events(spool, job_id)
    assert event["message"] == f"POST {URL} -> 204 (try 1 of 3)"
    assert event["data"] == {"delivery_id": delivery.delivery_id, "event": "job.succeeded",
                             "status": 204, "delivery": "delivered", "try": 1}


@pytest.mark.parametrize("code", [200, 202, 299])
def test_any_2xx_is_delivered(settings, spool, clock, code):
    job_id = finished_job(settings, spool)
    sender(settings, clock, Endpoint(code)).run_once()
    assert spool.webhook_deliveries(job_id)[0].status == "delivered"


def test_without_the_secret_it_is_sent_unsigned_and_says_so(settings, spool, clock):
    job_id = finished_job(settings, spool)
    endpoint = Endpoint(204)
    sender(settings, clock, endpoint, secret=None).run_once()
    assert SIGNATURE_HEADER not in endpoint.requests[0].headers
    (event,) = webhook_events(spool, job_id)
    assert event["message"] == (f"POST {URL} -> 204 (try 1 of 3); "
                                "unsigned: $ZMM_WEBHOOK_SECRET is not set")


def test_failed_tries_follow_the_backoff_schedule_then_give_up(settings, spool, clock):
    job_id = finished_job(settings, spool)
    endpoint = Endpoint(500)
    webhooks = sender(settings, clock, endpoint)
    assert [retry_delay(n, 2.0) for n in (1, 2)] == [2.0, 8.0]
    assert webhooks.run_once() == pytest.approx(2.0)
    clock.now = START + 1.99
    assert webhooks.run_once() == pytest.approx(0.01) and len(endpoint.requests) == 1
    clock.now = START + 2.0
    assert webhooks.run_once() == pytest.approx(8.0) and len(endpoint.requests) == 2
    clock.now = START + 9.99
    webhooks.run_once()
    assert len(endpoint.requests) == 2
    clock.now = START + 10.0
    assert webhooks.run_once() is None and len(endpoint.requests) == 3
    clock.now = START + 1000.0
    webhooks.run_once()
    assert len(endpoint.requests) == 3
    (delivery,) = spool.webhook_deliveries(job_id)
    assert (delivery.status, delivery.tries, delivery.last_error) == ("failed", 3, "HTTP 500")
    assert len({request.headers["x-zmm-delivery"] for request in endpoint.requests}) == 1
    assert [event["message"] for event in webhook_events(spool, job_id)] == [
        f"POST {URL} -> 500 (try 1 of 3); next try in 2s",
        f"POST {URL} -> 500 (try 2 of 3); next try in 8s",
        f"POST {URL} -> 500 (try 3 of 3); gave up after 3 tries",
    ]
    assert [event["data"]["delivery"] for event in webhook_events(spool, job_id)] == [
        "pending", "pending", "failed"]


def test_network_failures_are_failed_tries_in_words(settings, spool, clock):
    job_id = finished_job(settings, spool)
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    sender(settings, clock, Endpoint(refused)).run_once()
    (event,) = webhook_events(spool, job_id)
    assert event["message"] == f"POST {URL} failed: connection refused (try 1 of 3); next try in 2s"
    assert event["data"]["status"] is None
    assert spool.webhook_deliveries(job_id)[0].last_error == "connection refused"


def test_a_redirect_is_not_followed(settings, spool, clock):
    job_id = finished_job(settings, spool)
    endpoint = Endpoint(httpx.Response(302, headers={"Location": "https://elsewhere.test/"}), 204)
    sender(settings, clock, endpoint).run_once()
    assert [str(request.url) for request in endpoint.requests] == [URL]
    (delivery,) = spool.webhook_deliveries(job_id)
    assert (delivery.status, delivery.tries) == ("pending", 1)
    (event,) = webhook_events(spool, job_id)
    assert event["message"] == (f"POST {URL} -> 302, a redirect to https://elsewhere.test/, "
                                "not followed (try 1 of 3); next try in 2s")


def test_the_secret_never_reaches_the_spool_or_events(settings, spool, clock):
    job_id = finished_job(settings, spool)
    webhooks = sender(settings, clock, Endpoint(500, httpx.ReadTimeout("timed out"), 204))
    for offset in (0.0, 2.0, 10.0):
        clock.now = START + offset
        webhooks.run_once()
    webhooks.close()
    assert spool.webhook_deliveries(job_id)[0].status == "delivered"
    events = json.dumps(spool.events(job_id))
    assert "webhook" in events and SECRET not in events
    rows = json.dumps([d.__dict__ for d in spool.webhook_deliveries(job_id)])
    assert SECRET not in rows
    for path in settings.home.glob("spool.db*"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_claims_are_leases(settings, spool, clock):
    job_id = finished_job(settings, spool)
    (held,) = spool.claim_webhook_deliveries("sender-a", lease_s=10)
    assert spool.claim_webhook_deliveries("sender-b", lease_s=10) == []
    assert spool.next_webhook_due() is None  # claimed rows are not due for anyone else
    clock.now = START + 11  # sender-a died mid-try: its lease ran out
    (taken,) = spool.claim_webhook_deliveries("sender-b", lease_s=10)
    assert taken.delivery_id == held.delivery_id
    # the late result of the dead sender is refused, and writes no event
    assert not spool.record_webhook_try(held, "sender-a", status="delivered", last_error=None,
                                        retry_in_s=None, message="late", data={})
    assert webhook_events(spool, job_id) == []
    assert spool.record_webhook_try(taken, "sender-b", status="delivered", last_error=None,
                                    retry_in_s=None, message="ok", data={})
    assert spool.webhook_deliveries(job_id)[0].status == "delivered"


def test_deliver_due_tries_only_the_given_jobs_once_each(settings, spool, clock):
    settings.override("webhooks.backoff_s", 0.0)  # due again at once: still one try per round
    first = finished_job(settings, spool)
    other = finished_job(settings, spool)
    endpoint = Endpoint(503)
    results = deliver_due(spool, [first], settings=settings, transport=endpoint.transport,
                          environ={})
    assert [(r.job_id, r.try_number, r.status) for r in results] == [(first, 1, "pending")]
    assert len(endpoint.requests) == 1
    assert spool.webhook_deliveries(other)[0].tries == 0
    assert deliver_due(spool, [], settings=settings, transport=endpoint.transport) == []


def test_the_sender_thread_delivers_on_wake_and_drains_on_close(settings, store):
    endpoint = Endpoint(204)
    webhooks = WebhookSender(settings, transport=endpoint.transport, poll_s=60.0,
                             environ={}).start()
    first = finished_job(settings, store)
    webhooks.wake()
    wait_until(lambda: store.webhook_deliveries(first)[0].status == "delivered",
               message="the woken sender to deliver")
    second = finished_job(settings, store)  # no wake, a long poll: close(drain=True) sends it
    assert webhooks.close(5.0, drain=True)
    assert store.webhook_deliveries(second)[0].status == "delivered"
    assert len(endpoint.requests) == 2


def test_close_stops_after_the_try_in_progress(settings, store):
    entered, gate = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        gate.wait(10)
        return httpx.Response(204)

    first = finished_job(settings, store)
    second = finished_job(settings, store)
    webhooks = WebhookSender(settings, transport=httpx.MockTransport(slow), poll_s=60.0,
                             environ={}).start()
    assert entered.wait(10)
    assert not webhooks.close(0.1)  # still inside the first try
    gate.set()
    assert webhooks.close(5.0)
    assert store.webhook_deliveries(first)[0].status == "delivered"
    (left,) = store.webhook_deliveries(second)  # stays for the next process
    assert (left.status, left.tries, left.claimed_by) == ("pending", 0, None)


def test_purging_a_job_deletes_its_deliveries(settings, spool):
    job_id = finished_job(settings, spool)
    assert spool.mark_assets_deleted([(job_id, "test")], "2030-01-01T00:00:00.000000Z")
    assert spool.purge_jobs([job_id]) == 1
    assert spool.webhook_deliveries(job_id) == []
