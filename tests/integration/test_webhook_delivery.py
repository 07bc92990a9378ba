"""Completion webhooks end to end: a real Worker against the fake ComfyUI with
a WebhookSender beside it and the fake receiver on 127.0.0.1; `zmm queue
cancel` and `zmm serve-worker` as real processes, kill -9 included."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until
from tests.fakes.webhook import FakeWebhook
from tests.workers import make_worker
from zmm import intake
from zmm.backends.comfy import ComfyClient
from zmm.config import load
from zmm.store import Store
from zmm.worker.loop import Worker
from zmm.worker.webhooks import WebhookSender

SECRET = "it-s3cret-" + os.urandom(6).hex()


@pytest.fixture
def receiver():
    fake = FakeWebhook().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def secret(home, monkeypatch) -> str:
    monkeypatch.setenv("ZMM_WEBHOOK_SECRET", SECRET)  # inherited by zmm subprocesses too
    return SECRET


def configured(home, comfy, **overrides):
    settings = load(home)
    settings.override("comfyui.url", comfy.url)
    settings.override("worker.poll_s", 0.05)
    for key, value in overrides.items():
        settings.override(key.replace("__", "."), value)
    return settings


def enqueue(settings, **fields) -> str:
    raw = {"prompt": "webhook test", "size": "64x64", "steps": "3", **fields}
    with Store(settings.spool_path) as store:
        (job,) = store.enqueue(intake.build(raw, settings))
    return job.id


def drive(worker: Worker, until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached while driving the worker"
        worker.run_once()


@pytest.fixture
def rig(home, comfy):
    """rig(**settings overrides) -> (worker, store, settings), with a sender running."""
    opened = []

    def build(**overrides):
        settings = configured(home, comfy, **overrides)
        store = Store(settings.spool_path)
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        sender = WebhookSender(settings, poll_s=0.05).start()
        opened.append((worker, store, sender))
        return worker, store, settings

    yield build
    for worker, store, sender in opened:
        sender.close(5.0)
        worker.client.close()
        store.close()


def delivery(store: Store, job_id: str):
    (only,) = store.webhook_deliveries(job_id)
    return only


def signature_ok(post, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), post.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(post.headers.get("X-Zmm-Signature-256", ""), expected)


def test_a_succeeded_job_is_posted_once_and_signed(rig, receiver, secret):
    worker, store, settings = rig()
    job_id = enqueue(settings, webhook=receiver.hook_url)
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    wait_until(lambda: delivery(store, job_id).status == "delivered", message="the delivery")
    (post,) = receiver.received
    body = post.json()
    assert post.path == "/hook" and body["event"] == "job.succeeded"
    assert body["job"]["id"] == job_id and body["job"]["status"] == "succeeded"
    assert body["job"]["output_path"] == store.get(job_id).output_path
    assert body["job"]["output_file"] == str(settings.assets_dir / store.get(job_id).output_path)
    assert body["job"]["output_files"] == [str(settings.assets_dir / name)
                                           for name in store.get(job_id).output_list]
    assert signature_ok(post, secret)
    assert post.headers["X-Zmm-Event"] == "job.succeeded"
    assert post.headers["X-Zmm-Delivery"] == body["delivery_id"] == delivery(store, job_id).delivery_id
    assert post.body == delivery(store, job_id).body.encode("utf-8")


def test_a_failing_endpoint_is_tried_3_times_and_the_job_still_succeeds(rig, receiver, secret):
    receiver.status = 500
    worker, store, settings = rig(webhooks__backoff_s=0.05)
    job_id = enqueue(settings, webhook=receiver.hook_url)
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    wait_until(lambda: delivery(store, job_id).status == "failed", message="giving up")
    assert len(receiver.received) == 3
    assert len({post.headers["X-Zmm-Delivery"] for post in receiver.received}) == 1
    arrivals = [post.at for post in receiver.received]
    assert arrivals[1] - arrivals[0] >= 0.05 and arrivals[2] - arrivals[1] >= 0.2  # 4x backoff
    events = [e for e in store.events(job_id) if e["kind"] == "webhook"]
    assert [e["data"]["try"] for e in events] == [1, 2, 3]
    assert events[-1]["message"].endswith("(try 3 of 3); gave up after 3 tries")
    job = store.get(job_id)
    assert job.status == "succeeded" and job.error_message is None
    assert delivery(store, job_id).tries == 3


def test_a_hanging_endpoint_does_not_delay_the_worker(rig, receiver, secret):
    receiver.hang(1)
    worker, store, settings = rig(webhooks__timeout_s=30.0)
    first = enqueue(settings, webhook=receiver.hook_url)
    drive(worker, lambda: store.get(first).status == "succeeded")
    wait_until(lambda: len(receiver.received) == 1, message="the first POST to arrive")
    second = enqueue(settings)
    drive(worker, lambda: store.get(second).status == "succeeded")
    assert receiver.answered == 0, "the second job must finish while the first POST hangs"
    assert delivery(store, first).tries == 0  # still in its first try
    receiver.release()
    wait_until(lambda: delivery(store, first).status == "delivered", message="the late answer")
    assert delivery(store, first).tries == 1


def test_a_failed_job_is_delivered_as_job_failed(rig, receiver, secret, comfy):
    worker, store, settings = rig()
    comfy.fail_next_execution(message="the sampler broke")
    job_id = enqueue(settings, webhook=receiver.hook_url)
    drive(worker, lambda: store.get(job_id).status == "failed")
    wait_until(lambda: delivery(store, job_id).status == "delivered", message="the delivery")
    (post,) = receiver.received
    assert post.headers["X-Zmm-Event"] == "job.failed" and signature_ok(post, secret)
    job = post.json()["job"]
    assert job["status"] == "failed" and "the sampler broke" in job["error_message"]


@pytest.mark.slow
def test_cancelling_a_queued_job_delivers_job_cancelled_without_a_worker(home, receiver, secret):
    queued = run_zmm("generate", "to cancel", "--no-wait", "--size", "64x64",
                     "--webhook", receiver.hook_url)
    assert queued.returncode == 0, queued.stderr
    (job_id,) = queued.stdout.split()
    result = run_zmm("queue", "cancel", job_id)
    assert (result.returncode, result.stdout) == (0, f"{job_id}\tcancelled\n"), result.stderr
    (post,) = receiver.received  # sent by the cancel command itself
    assert post.headers["X-Zmm-Event"] == "job.cancelled" and signature_ok(post, secret)
    assert post.json()["job"]["status"] == "cancelled"
    with Store(load(home).spool_path) as store:
        assert delivery(store, job_id).status == "delivered"
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_dead_endpoint_changes_nothing_in_cancels_output(home, receiver, secret):
    receiver.respond(503)
    queued = run_zmm("generate", "to cancel", "--no-wait", "--webhook", receiver.hook_url)
    (job_id,) = queued.stdout.split()
    result = run_zmm("queue", "cancel", job_id, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"schema": 2, "ok": True, "results": [
        {"id": job_id, "result": "cancelled", "status": "cancelled"}], "error": None}
    with Store(load(home).spool_path) as store:
        left = delivery(store, job_id)
    assert (left.status, left.tries, left.claimed_by) == ("pending", 1, None)  # for a worker


@pytest.mark.slow
def test_a_worker_killed_before_delivery_leaves_it_to_the_next(worker_env, settings, comfy,
                                                               receiver, secret):
    receiver.hang(1)  # the first worker dies inside its first try
    env = {"ZMM_WEBHOOKS_TIMEOUT_S": "1"}  # lease: 2 x timeout + 5 s
    job_id = enqueue(settings, webhook=receiver.hook_url)
    first = LiveProcess("serve-worker", "--no-progress", env=env)
    try:
        wait_until(lambda: len(receiver.received) == 1, timeout=30, message="the first POST")
    finally:
        first.kill()
        first.wait()
    with Store(settings.spool_path) as store:
        assert store.get(job_id).status == "succeeded"
        assert delivery(store, job_id).status == "pending"
        second = LiveProcess("serve-worker", "--no-progress", env=env)
        try:
            wait_until(lambda: delivery(store, job_id).status == "delivered", timeout=40,
                       message="the next worker to deliver")
        finally:
            second.signal(signal.SIGTERM)
        assert second.wait() == 0
    assert len(receiver.received) >= 2  # at least once, never lost
    assert " -> 204 " in events_of(settings, job_id)[-1]
    assert {post.headers["X-Zmm-Delivery"] for post in receiver.received} == {
        receiver.received[0].json()["delivery_id"]}
    assert all(signature_ok(post, secret) for post in receiver.received)


def events_of(settings, job_id: str) -> list[str]:
    with Store(settings.spool_path) as store:
        return [e["message"] for e in store.events(job_id) if e["kind"] == "webhook"]


@pytest.mark.slow
def test_inline_generate_delivers_before_it_exits(worker_env, settings, receiver, secret):
    result = run_zmm("generate", "inline hook", "--size", "64x64", "--steps", "2", "--json",
                     "--webhook", receiver.hook_url, timeout=60)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    (post,) = receiver.received
    assert post.json()["job"]["id"] == job["id"] and signature_ok(post, secret)


@pytest.mark.slow
def test_inline_generate_does_not_hang_on_a_hanging_endpoint(worker_env, settings, receiver):
    receiver.hang(1)
    started = time.monotonic()
    result = run_zmm("generate", "inline hook", "--size", "64x64", "--steps", "2",
                     "--webhook", receiver.hook_url, env={"ZMM_WEBHOOKS_TIMEOUT_S": "60"},
                     timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30, "generate waited for the webhook's timeout"
    assert len(receiver.received) == 1  # tried; the row waits in the outbox for a worker
    with Store(settings.spool_path) as store:
        (job_id,) = [row[0] for row in store.conn.execute("SELECT id FROM jobs")]
        assert delivery(store, job_id).status == "pending"


def test_the_secret_is_nowhere_in_the_spool_file(rig, receiver, secret, home):
    receiver.respond(500)
    worker, store, settings = rig(webhooks__backoff_s=0.05)
    job_id = enqueue(settings, webhook=receiver.hook_url)
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    wait_until(lambda: delivery(store, job_id).status == "delivered", message="the delivery")
    assert len(receiver.received) == 2 and all(signature_ok(p, secret) for p in receiver.received)
    files = sorted(settings.home.glob("spool.db*"))
    assert settings.spool_path in files and settings.spool_path.with_name("spool.db-wal") in files
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"the secret is in {path}"
