"""A broken or malicious ComfyUI (the fake's malicious mode, tests/fakes/comfy_malice.py):
every answer is bounded, nonsense ends the job with a reason, the worker lives on."""

from __future__ import annotations

import pytest

from tests.integration.test_faults import drive, enqueue
from tests.workers import make_worker
from zmm.backends.comfy import MIB, ComfyClient, Limits
from zmm.backends.comfy_events import StreamClosed
from zmm.config import load
from zmm.store import Store
from zmm.worker.loop import Worker

SMALL = Limits(json_bytes=1 * MIB, image_bytes=2 * MIB, frame_bytes=1 * MIB)


def hostile_worker(home, comfy, **overrides) -> tuple[Worker, Store, ComfyClient]:
    settings = load(home)
    settings.override("comfyui.url", comfy.url)
    settings.override("worker.poll_s", 0.05)
    for key, value in overrides.items():
        settings.override(key.replace("__", "."), value)
    store = Store(settings.spool_path)
    client = ComfyClient(comfy.url, timeout=5, limits=SMALL)
    return make_worker(store, client, settings), store, client


def run_to_the_end(home, settings, comfy, **overrides):
    (job_id,) = enqueue(settings)
    worker, store, client = hostile_worker(home, comfy, **overrides)
    drive(worker, lambda: store.get(job_id).status in ("succeeded", "failed"), timeout=30)
    return store.get(job_id), client


def test_history_answering_invalid_json_fails_the_job_after_five_tries(home, settings, comfy):
    comfy.malicious("invalid-json")
    job, _client = run_to_the_end(home, settings, comfy)
    assert job.status == "failed"
    assert "with invalid JSON" in job.error_message
    assert "(5 times in a row)" in job.error_message


def test_history_nested_200000_deep_is_a_clear_failure_not_a_crash(home, settings, comfy):
    comfy.malicious("deep-json", size=200_000)
    job, _client = run_to_the_end(home, settings, comfy)
    assert job.status == "failed"
    assert "JSON nested too deeply" in job.error_message


@pytest.mark.parametrize(("kind", "cap", "words"), [
    ("huge-history", SMALL.json_bytes, "GET /history/"),
    ("huge-view", SMALL.image_bytes, "GET /view"),
])
def test_a_huge_answer_is_read_only_up_to_its_cap(home, settings, comfy, kind, cap, words):
    malice = comfy.malicious(kind, size=64 * MIB)
    job, client = run_to_the_end(home, settings, comfy)
    assert job.status == "failed"
    assert words in job.error_message and f"more than {cap // MIB} MB" in job.error_message
    assert client.bytes_read <= 5 * (cap + MIB)  # a few tries, each stopped at the cap
    assert malice.sent < malice.size  # the rest was never asked for


def test_a_png_signature_followed_by_zeros_is_not_saved(home, settings, comfy):
    comfy.malicious("fake-png", size=MIB)
    job, _client = run_to_the_end(home, settings, comfy)
    assert job.status == "failed"
    assert "is not an image that decodes" in job.error_message
    assert not list(settings.assets_dir.rglob(f"{job.id}*"))


def test_a_websocket_frame_past_its_cap_closes_the_stream(comfy):
    malice = comfy.malicious("huge-frame", size=2 * MIB)
    client = ComfyClient(comfy.url, timeout=5, limits=SMALL)
    with client.events("c1") as stream, pytest.raises(StreamClosed) as raised:
        while True:
            stream.recv(timeout=5)
    assert "1009" in raised.value.reason  # message too big: not read into memory
    assert malice.sent == 2 * MIB


def test_a_prompt_that_never_ends_fails_after_max_run_s(home, settings, comfy):
    comfy.malicious("endless")
    job, _client = run_to_the_end(home, settings, comfy, worker__max_run_s=1.0)
    assert job.status == "failed"
    assert "ran longer than 1 s (worker.max_run_s)" in job.error_message
    assert comfy.interrupts  # it was interrupted on the server, not just abandoned


def test_max_run_s_per_style_overrides_the_default(home, settings, comfy):
    comfy.malicious("endless")
    (job_id,) = enqueue(settings, style="infographic")
    worker, store, _client = hostile_worker(home, comfy, worker__max_run_s=0.0)
    worker.upkeep.run_limit.by_style["infographic"] = 0.5
    drive(worker, lambda: store.get(job_id).status == "failed", timeout=30)
    assert "ran longer than 0.5 s" in store.get(job_id).error_message


def test_a_job_s_own_max_run_s_overrides_its_style_and_the_config(home, settings, comfy):
    comfy.malicious("endless")
    (job_id,) = enqueue(settings, style="infographic", max_run_s="0.5")
    worker, store, _client = hostile_worker(home, comfy, worker__max_run_s=3600.0)
    worker.upkeep.run_limit.by_style["infographic"] = 3600.0
    drive(worker, lambda: store.get(job_id).status == "failed", timeout=30)
    assert "ran longer than 0.5 s (--max-run-s)" in store.get(job_id).error_message
    assert comfy.interrupts


def test_ping_waits_the_probe_timeout_not_the_request_timeout():
    import httpx

    waited = []

    def answer(request: httpx.Request) -> httpx.Response:
        waited.append(request.extensions["timeout"]["read"])
        return httpx.Response(200, json={"system": {}})

    client = ComfyClient("http://127.0.0.1:9", timeout=30,
                         transport=httpx.MockTransport(answer))
    client.ping()
    assert waited == [5.0]


def test_the_waiting_line_is_said_once_then_on_change(capsys):
    from zmm.cli.render import WorkerView

    view = WorkerView(live=False)
    for delay in (1, 1, 1, 1, 2, 30, 30, 30):  # a restarting managed child: 1 s each time
        view.waiting("http://c", "connection refused", delay)
    view.waiting("http://c", "timed out after 5s", 30)
    view.connected("http://c")
    view.waiting("http://c", "connection refused", 1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "waiting for ComfyUI at http://c: connection refused, retrying in 1s",
        "waiting for ComfyUI at http://c: connection refused, retrying in 2s",
        "waiting for ComfyUI at http://c: connection refused, retrying in 30s",
        "waiting for ComfyUI at http://c: timed out after 5s, retrying in 30s",
        "connected to ComfyUI at http://c",
        "waiting for ComfyUI at http://c: connection refused, retrying in 1s"]
