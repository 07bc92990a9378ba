"""The worker and the cloud: when a job goes to a provider (asked for, ComfyUI
down past the job's max wait, no VRAM, local attempts spent), what is recorded,
and what happens when providers fail. Fake ComfyUI, Stability, OpenAI and NVML
servers on 127.0.0.1; time-based behaviour on an injected clock."""

from __future__ import annotations

import time

import pytest

from tests.clocks import FakeClock as FakeTime
from tests.conftest import closed_url
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import fake_nvml
from tests.fakes.vram import GIB, VramLedger
from tests.workers import make_worker
from zmm import intake
from zmm.backends import gpu
from zmm.backends.comfy import ComfyClient
from zmm.cloud import providers
from zmm.cloud.lane import CloudLane
from zmm.config import load
from zmm.store import Store
from zmm.timestamps import parse_iso
from zmm.vram.gate import VramGate


@pytest.fixture
def clouds(stability, openai):
    return stability, openai


class World:
    def __init__(self, home, clouds, comfy_url: str, fake_time: FakeTime | None = None,
                 gate=None, **overrides) -> None:
        self.stability, self.openai = clouds
        self.time = fake_time
        settings = load(home)
        for key, value in {"comfyui.url": comfy_url, "stability.url": self.stability.url,
                           "openai.url": self.openai.url, "cloud.timeout_s": 5.0,
                           "worker.poll_s": 0.05, "worker.backoff_s": 0.01,
                           "comfyui.retry_max_s": 0.2, **overrides}.items():
            settings.override(key, value)
        self.settings = settings
        clock = fake_time.clock if fake_time else time.time
        self.store = Store(settings.spool_path, clock=clock)
        keys = {"STABILITY_API_KEY": self.stability.key, "OPENAI_API_KEY": self.openai.key}
        timing = {"sleep": fake_time.sleep, "monotonic": fake_time.clock} if fake_time else {}
        self.lane = CloudLane(settings, provider_list=providers.build(settings, environ=keys),
                              **timing)
        self.notices: list[str] = []
        self.worker = make_worker(self.store, ComfyClient(comfy_url, timeout=2), settings,
                             cloud_lane=self.lane, gate=gate, **timing)
        self.worker.observer.notice = self.notices.append

    def enqueue(self, **fields) -> str:
        raw = {"prompt": "a lighthouse", "steps": "2", "size": "64x64", **fields}
        (job,) = self.store.enqueue(intake.build(raw, self.settings))
        return job.id

    def drive(self, until, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "condition not reached"
            self.worker.run_once()

    def job(self, job_id: str):
        return self.store.get(job_id)

    def events(self, job_id: str, kind: str) -> list[dict]:
        return [event for event in self.store.events(job_id) if event["kind"] == kind]

    def close(self) -> None:
        self.lane.close()
        self.store.close()


@pytest.fixture
def world(home, clouds):
    made: list[World] = []

    def make(comfy_url: str | None = None, **kwargs) -> World:
        made.append(World(home, clouds, comfy_url or closed_url(), **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_comfyui_down_high_job_goes_to_the_first_provider_after_30s(world):
    w = world(fake_time=FakeTime())
    job_id = w.enqueue(priority="HIGH", allow_cloud=True)
    start = w.time.now
    w.drive(lambda: w.time.now >= start + 29.9)
    assert w.job(job_id).status == "queued" and w.stability.requests == []
    w.drive(lambda: w.job(job_id).status == "succeeded")
    job = w.job(job_id)
    assert (job.backend, job.model_used, job.cost_usd) == ("stability", "stable-image-core", 0.03)
    assert w.openai.requests == [] and job.seed == int(w.stability.requests[0]["fields"]["seed"])
    (fallback,) = w.events(job_id, "cloud_fallback")
    assert fallback["data"] == {"trigger": "comfyui_down"}
    assert parse_iso(fallback["at"]) >= start + 30
    assert "unreachable for 30s, past the 30s a HIGH job may wait" in fallback["message"]
    saved = w.settings.assets_dir / job.output_path
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (job.width, job.height) == (64, 64) \
        or (job.width, job.height) == (1024, 1024)


def test_comfyui_down_without_cloud_permission_the_job_waits(world):
    w = world(fake_time=FakeTime(), **{"comfyui.retry_max_s": 30.0})
    job_id = w.enqueue(priority="HIGH")
    start = w.time.now
    w.drive(lambda: w.time.now >= start + 3600)
    job = w.job(job_id)
    assert job.status == "queued" and job.attempts == 0
    assert w.stability.requests == [] and w.openai.requests == []


def test_max_waits_follow_priority(world):
    w = world(fake_time=FakeTime())
    start = w.time.now
    critical = w.enqueue(priority="CRITICAL", allow_cloud=True)
    medium = w.enqueue(priority="MEDIUM", allow_cloud=True)
    w.drive(lambda: w.job(critical).status == "succeeded")
    (at_once,) = w.events(critical, "cloud_fallback")
    assert parse_iso(at_once["at"]) - start < 1  # CRITICAL may wait 0 s
    assert w.events(medium, "cloud_fallback") == []
    w.drive(lambda: w.job(medium).status == "succeeded")
    (fallback,) = w.events(medium, "cloud_fallback")
    assert parse_iso(fallback["at"]) - start >= 120


def test_402_on_stability_then_openai_records_cost_and_no_seed(world):
    w = world(fake_time=FakeTime())
    w.stability.fail_next("payment_required")
    job_id = w.enqueue(priority="CRITICAL", allow_cloud=True, negative="text")
    w.drive(lambda: w.job(job_id).status == "succeeded")
    job = w.job(job_id)
    assert job.backend == "openai" and job.seed is None and job.model_used == "gpt-image-1-mini"
    assert 0 < job.cost_usd < 0.01
    attempts = [e["message"] for e in w.events(job_id, "cloud")]
    assert attempts[0].startswith("stability: 402 payment_required: You lack sufficient credits")
    assert attempts[1].startswith("openai: image in ")
    assert w.openai.requests[0]["json"]["prompt"].endswith("\n\nAvoid: text")


def test_content_filtered_goes_to_the_next_provider_never_succeeds_with_it(world):
    w = world(fake_time=FakeTime())
    w.stability.fail_next("content_filtered")
    job_id = w.enqueue(priority="CRITICAL", allow_cloud=True)
    w.drive(lambda: w.job(job_id).status == "succeeded")
    job = w.job(job_id)
    assert job.backend == "openai"
    assert job.cost_usd > 0.03  # the filtered image was billed too
    assert "CONTENT_FILTERED" in w.events(job_id, "cloud")[0]["message"]


def test_every_provider_refusing_a_fallback_job_sends_it_back_to_comfyui(world, tmp_path):
    comfy = FakeComfyUI(output_dir=tmp_path / "out").start()
    port = comfy.port
    comfy.stop()
    w = world(f"http://127.0.0.1:{port}", fake_time=FakeTime())
    w.stability.fail_next("content_moderation")
    w.openai.fail_next("moderation_blocked")
    job_id = w.enqueue(priority="CRITICAL", allow_cloud=True)
    w.drive(lambda: w.events(job_id, "requeued"))
    job = w.job(job_id)
    assert job.status == "queued" and not job.cloud_allowed and job.attempts == 0
    assert job.phase_detail.startswith("waiting for ComfyUI: the cloud refused it (stability: 403")
    comfy = FakeComfyUI(output_dir=tmp_path / "out", port=port).start()
    try:
        w.drive(lambda: w.job(job_id).status == "succeeded")
    finally:
        comfy.stop()
    assert w.job(job_id).backend == "local" and len(w.stability.requests) == 1


def test_a_cloud_only_job_fails_with_every_providers_message(world):
    w = world(fake_time=FakeTime())
    w.stability.fail_next("payment_required")
    w.openai.fail_next("insufficient_quota")
    job_id = w.enqueue(backend="cloud")
    w.drive(lambda: w.job(job_id).status == "failed")
    job = w.job(job_id)
    assert job.error_message.startswith("no cloud provider could take it: stability: 402 ")
    assert "openai: 429 insufficient_quota" in job.error_message
    assert job.backend == "openai" and job.cost_usd is None


def test_a_cloud_only_job_never_touches_comfyui(world, tmp_path):
    comfy = FakeComfyUI(output_dir=tmp_path / "out").start()
    try:
        w = world(comfy.url)
        job_id = w.enqueue(backend="cloud", quality="high")
        local_id = w.enqueue()
        w.drive(lambda: all(w.job(i).status == "succeeded" for i in (job_id, local_id)))
        assert [run["prompt_id"] for run in comfy.runs] == [local_id]
        assert w.job(job_id).backend == "stability" and w.job(job_id).cost_usd == 0.08
        assert w.events(job_id, "cloud_fallback") == []  # asked for, not a fallback
    finally:
        comfy.stop()


def test_passing_failures_are_retried_later_within_the_attempts(world):
    w = world(fake_time=FakeTime(), **{"cloud.max_retries": 0})
    w.stability.fail_next("server_error", times=10)
    w.openai.fail_next("overloaded", times=10)
    job_id = w.enqueue(backend="cloud")
    w.drive(lambda: w.job(job_id).status == "failed")
    job = w.job(job_id)
    assert job.attempts == 3 and len(w.stability.requests) == 3
    assert job.error_message.startswith("gave up after 3 attempts: cloud providers failed for now")


def test_local_attempts_spent_fall_back_to_the_cloud(world, tmp_path):
    comfy = FakeComfyUI(output_dir=tmp_path / "out").start()
    try:
        w = world(comfy.url)
        comfy.oom_next_execution()
        comfy.oom_next_execution()
        job_id = w.enqueue(allow_cloud=True, quality="high")
        w.drive(lambda: w.job(job_id).status == "succeeded")
        (fallback,) = w.events(job_id, "cloud_fallback")
        assert fallback["data"] == {"trigger": "out_of_memory"}
        assert "ran out of GPU memory again" in fallback["message"]
        assert w.job(job_id).backend == "stability" and w.job(job_id).attempts == 1
    finally:
        comfy.stop()


def test_no_vram_past_the_max_wait_goes_to_the_cloud(world, tmp_path, home):
    ledger = VramLedger(total_bytes=24 * GIB)
    ledger.allocate("a game", 20 * GIB, pid=999, process_name="game.exe")
    comfy = FakeComfyUI(output_dir=tmp_path / "out", ledger=ledger).start()
    try:
        with gpu.use_backend(fake_nvml(ledger)):
            settings = load(home)
            store = Store(settings.spool_path)
            gate = VramGate(store, settings, ollama=None, free_bytes=gpu.free_bytes,
                            notice=lambda text: None)
            w = world(comfy.url, gate=gate)
            job_id = w.enqueue(priority="HIGH", quality="high", allow_cloud=True)
            stays = w.enqueue(priority="HIGH", quality="high")
            finished = ("succeeded", "failed")
            w.drive(lambda: w.job(job_id).status in finished and w.job(stays).status in finished)
            (fallback,) = w.events(job_id, "cloud_fallback")
            assert fallback["data"] == {"trigger": "vram"}
            assert "need 14.0 GB, free 4.0 GB: sending it to the cloud" in fallback["message"]
            assert w.job(job_id).status == "succeeded" and w.job(job_id).backend == "stability"
            # Not allowed to leave: it ran anyway, as before, and ComfyUI ran out of memory.
            assert w.events(stays, "cloud_fallback") == [] and comfy.runs
            store.close()
    finally:
        comfy.stop()


def test_cancel_during_a_cloud_request(world):
    w = world()
    w.stability.latency = 1.0
    job_id = w.enqueue(backend="cloud")
    w.drive(lambda: w.stability.requests)
    w.store.cancel([job_id])
    w.drive(lambda: w.job(job_id).status == "cancelled")
    job = w.job(job_id)
    assert job.output_path is None and job.cost_usd == 0.03  # it was generated, and billed
    assert not list(w.settings.assets_dir.rglob("*.png"))


def test_stop_now_requeues_a_cloud_job_at_once(world):
    w = world()
    w.stability.latency = 5.0
    job_id = w.enqueue(backend="cloud")
    w.drive(lambda: w.stability.requests)
    w.worker.request_stop("now")
    started = time.monotonic()
    w.drive(lambda: w.worker.done)
    assert time.monotonic() - started < 2
    job = w.job(job_id)
    assert job.status == "queued" and job.attempts == 0
    assert "interrupted (signal) during a cloud request" in job.phase_detail


def test_keys_never_reach_the_spool_output_or_messages(world, cli, capsys):
    w = world(fake_time=FakeTime())
    w.stability.fail_next("unauthorized")
    w.openai.fail_next("server_error", times=5)
    failing = w.enqueue(backend="cloud")
    w.drive(lambda: w.job(failing).status in ("failed", "queued") and w.job(failing).attempts)
    fine = w.enqueue(backend="cloud")
    w.drive(lambda: w.job(fine).status == "succeeded")
    outputs = [cli("history", "--json").stdout, cli("history", "show", failing, "--json").stdout,
               cli("history", "show", fine, "--json").stdout, cli("config", "show").stdout,
               "\n".join(w.notices), capsys.readouterr().err]
    spool = b"".join(path.read_bytes() for path in w.settings.home.glob("spool.db*"))
    for key in (w.stability.key, w.openai.key):
        assert key.encode() not in spool
        assert not [text for text in outputs if key in text]


def test_a_cloud_job_taken_over_meanwhile_leaves_the_display_too(world):
    """Its lease ran out and another worker adopted it: the answer is dropped, and
    the worker's display forgets the job (it is no longer this worker's)."""
    w = world()
    w.stability.latency = 0.5
    finished: list[str] = []
    w.worker.observer.job_finished = lambda job: finished.append(job.id)
    job_id = w.enqueue(backend="cloud")
    w.drive(lambda: w.job(job_id).phase == "cloud" and w.worker.cloud.busy())
    assert w.store.adopt(job_id, "another-worker", lease_s=60, owner=w.worker.id,
                         reason="test: its lease expired") is not None
    w.drive(lambda: any("taken over" in text for text in w.notices))
    assert w.job(job_id).worker_id == "another-worker" and w.job(job_id).status == "running"
    assert finished == [job_id]


def test_a_job_no_live_backend_can_run_goes_to_the_cloud_after_its_max_wait(world, comfy):
    comfy.set_checkpoints(["v1-5-pruned-emaonly.safetensors"])  # up, but without SDXL
    w = world(comfy.url, fake_time=FakeTime())
    job_id = w.enqueue(priority="HIGH", allow_cloud=True, model="sdxl")
    start = w.time.now
    w.drive(lambda: w.time.now >= start + 29)
    assert w.job(job_id).status == "queued" and w.stability.requests == []
    w.drive(lambda: w.job(job_id).status == "succeeded")
    job = w.job(job_id)
    assert job.backend == "stability" and comfy.submissions == []
    (fallback,) = w.events(job_id, "cloud_fallback")
    assert fallback["data"] == {"trigger": "no_backend"}
    assert parse_iso(fallback["at"]) - start >= 30
    assert "no backend has sd_xl_base_1.0.safetensors, past the 30s a HIGH job may wait" \
        in fallback["message"]


def test_a_job_no_live_backend_can_run_without_cloud_permission_waits(world, comfy):
    comfy.set_checkpoints(["v1-5-pruned-emaonly.safetensors"])
    w = world(comfy.url, fake_time=FakeTime())
    job_id = w.enqueue(priority="HIGH", model="sdxl")
    start = w.time.now
    w.drive(lambda: w.time.now >= start + 600)
    job = w.job(job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert w.stability.requests == [] and comfy.submissions == []
