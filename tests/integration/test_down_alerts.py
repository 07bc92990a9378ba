"""Down alerts: one backend.down after comfyui.alert_after_s unreachable, one
backend.up when it answers, through the webhook outbox (signed, retried)."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.clocks import FakeClock
from tests.conftest import LiveProcess, wait_until
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.webhook import FakeWebhook
from zmm.store import Store
from zmm.store.outbox import ALERT_PREFIX
from zmm.worker import webhooks
from zmm.worker.alerts import DownAlarm

URL = "http://127.0.0.1:18998"


@pytest.fixture
def receiver():
    fake = FakeWebhook().start()
    yield fake
    fake.stop()


def alarm_on(spool, clock, webhook_url: str, notices: list[str]) -> DownAlarm:
    return DownAlarm(spool, URL, webhook_url=webhook_url, after_s=300.0,
                     notice=notices.append, monotonic=clock)


def test_one_down_alert_past_the_limit_none_repeated_and_one_up(spool, clock):
    notices: list[str] = []
    alarm = alarm_on(spool, clock, "http://hooks.example/alerts", notices)
    alarm.unreachable("connection refused")
    clock.advance(299)
    alarm.unreachable("connection refused")
    assert notices == [] and spool.webhook_deliveries(ALERT_PREFIX + URL) == []
    clock.advance(2)
    for _ in range(3):  # still down: no repeats
        alarm.unreachable("connection refused")
        clock.advance(60)
    assert len(notices) == 1 and "unreachable for 301 s (connection refused)" in notices[0]
    alarm.reachable()
    alarm.reachable()
    rows = spool.webhook_deliveries(ALERT_PREFIX + URL)
    assert [row.event for row in rows] == ["backend.down", "backend.up"]
    assert all(row.url == "http://hooks.example/alerts" for row in rows)
    assert "answers again after 481 s" in notices[1]


def test_an_outage_shorter_than_the_limit_alerts_nothing(spool, clock):
    notices: list[str] = []
    alarm = alarm_on(spool, clock, "http://hooks.example/alerts", notices)
    alarm.unreachable("timed out")
    clock.advance(200)
    alarm.reachable()
    clock.advance(200)
    alarm.unreachable("timed out")  # a new outage: its clock starts again
    assert notices == [] and spool.webhook_deliveries(ALERT_PREFIX + URL) == []


def test_without_an_alert_url_only_the_line_is_written(spool, clock):
    notices: list[str] = []
    alarm = alarm_on(spool, clock, "", notices)
    alarm.unreachable("refused")
    clock.advance(301)
    alarm.unreachable("refused")
    assert len(notices) == 1 and spool.webhook_deliveries(ALERT_PREFIX + URL) == []


def test_an_alert_is_delivered_signed_like_a_job_webhook(settings, receiver, monkeypatch):
    monkeypatch.setenv("ZMM_WEBHOOK_SECRET", "s3cret")
    clock = FakeClock()
    with Store(settings.spool_path) as store:
        alarm = DownAlarm(store, URL, webhook_url=receiver.hook_url, after_s=0.0,
                          notice=lambda _t: None, monotonic=clock)
        alarm.unreachable("refused")
        results = webhooks.deliver_due(store, settings=settings)
    assert [r.status for r in results] == ["delivered"]
    sent = receiver.received[0]
    assert webhooks.verify(sent.body, "s3cret", sent.headers.get(webhooks.SIGNATURE_HEADER))
    assert sent.headers["X-Zmm-Event"] == "backend.down"
    body = sent.json()
    assert body["event"] == "backend.down" and body["backend"]["url"] == URL
    assert body["backend"]["reason"] == "refused"


@pytest.mark.slow
def test_a_worker_alerts_once_while_comfyui_is_down_and_again_when_it_is_back(
        settings, receiver):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"ZMM_COMFYUI_URL": f"http://127.0.0.1:{port}", "ZMM_OLLAMA_ENABLED": "false",
           "ZMM_COMFYUI_ALERT_AFTER_S": "0.5", "ZMM_ALERTS_WEBHOOK_URL": receiver.hook_url,
           "ZMM_COMFYUI_RETRY_MAX_S": "0.5"}
    worker = LiveProcess("serve-worker", "--no-progress", env=env)
    comfy = None
    try:
        worker.wait_for_line("has been unreachable for")
        wait_until(lambda: receiver.received, timeout=15, message="backend.down delivered")
        comfy = FakeComfyUI(port=port).start()
        wait_until(lambda: len(receiver.received) >= 2, timeout=15, message="backend.up")
        assert [body["event"] for body in receiver.bodies()] == ["backend.down", "backend.up"]
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        assert sum("has been unreachable for" in line for line in worker.stderr) == 1
    finally:
        if worker.process.poll() is None:
            worker.kill()
            worker.wait()
        if comfy is not None:
            comfy.stop()
