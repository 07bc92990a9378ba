"""The GPU shared by Ollama and ComfyUI, end to end: the fake Ollama, fake
ComfyUI and fake NVML share one VRAM ledger, so the tests see memory move."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import LiveProcess, drive, run_zmm, wait_until
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import fake_nvml, persist
from tests.fakes.ollama import FakeOllama
from tests.fakes.vram import GIB, VramLedger
from tests.workers import make_worker as build_test_worker
from zmm import intake
from zmm.backends import gpu
from zmm.backends.comfy import ComfyClient
from zmm.backends.ollama import OllamaClient
from zmm.config import load
from zmm.store import Store
from zmm.vram.gate import SWAP_KEY, VramGate

HEAVY = "llama3.1:13b"


@pytest.fixture
def gpu_world(tmp_path):
    ledger = VramLedger(total_bytes=24 * GIB)
    ollama = FakeOllama(models={HEAVY: 14 * GIB, "qwen2.5:7b": 7 * GIB}, ledger=ledger).start()
    comfy = FakeComfyUI(ledger=ledger, output_dir=tmp_path / "out").start()
    try:
        with gpu.use_backend(fake_nvml(ledger)):
            yield ledger, ollama, comfy
    finally:
        comfy.stop()
        ollama.stop()


def worker_for(home, comfy, ollama, **overrides):
    settings = load(home)
    for key, value in {"comfyui.url": comfy.url, "ollama.url": ollama.url, "worker.poll_s": 0.05,
                       "ollama.queue_end_delay_s": 0.2, "ollama.unload_timeout_s": 2.0,
                       **overrides}.items():
        settings.override(key, value)
    store = Store(settings.spool_path)
    notices: list[str] = []
    gate = VramGate(store, settings, ollama=OllamaClient(ollama.url, timeout=5),
                    free_bytes=gpu.free_bytes, notice=notices.append)
    worker = build_test_worker(store, ComfyClient(comfy.url, timeout=5), settings, gate=gate,
                    vram_used=gpu.used_bytes)
    return worker, store, settings, notices


def enqueue(store, settings, **fields):
    raw = {"prompt": "diagram", "steps": "2", **fields}
    raw.setdefault("size", None if "aspect" in fields else "64x64")
    return [job.id for job in store.enqueue(intake.build(raw, settings))]


def test_high_sdxl_job_unloads_ollama_runs_and_reloads_the_same_models(home, gpu_world):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY, keep_alive=3600)
    assert ledger.free == 10 * GIB  # SDXL needs 12 + 2 GB: it does not fit beside the LLM
    worker, store, settings, _ = worker_for(home, comfy, ollama)
    (job_id,) = enqueue(store, settings, priority="HIGH", quality="high")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    kinds = [e["kind"] for e in store.events(job_id)]
    assert "swap" in kinds
    loads = [body for path, _, body in ollama.requests if body.get("keep_alive") == 0]
    assert [body["model"] for body in loads] == [HEAVY]
    drive(worker, lambda: HEAVY in ollama.loaded and store.get_state(SWAP_KEY) is None)
    reload = [body for _, _, body in ollama.requests if body.get("keep_alive") not in (0, None)][-1]
    assert reload["model"] == HEAVY and reload["keep_alive"].endswith("s")
    assert int(reload["keep_alive"][:-1]) > 3000  # the time it had left, not a default
    assert "reload" in [e["kind"] for e in store.events(job_id)]
    assert store.get(job_id).vram_used_gb >= 12


def test_standard_job_downgrades_to_sd15_instead_of_swapping(home, gpu_world):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY)
    worker, store, settings, _ = worker_for(home, comfy, ollama)
    (job_id,) = enqueue(store, settings, priority="LOW", quality="standard", aspect="16:9")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    job = store.get(job_id)
    assert job.model_used == "v1-5-pruned-emaonly.safetensors"
    assert (job.width, job.height) == (768, 432)
    assert "downgrade" in [e["kind"] for e in store.events(job_id)]
    assert HEAVY in ollama.loaded  # nothing was unloaded


def test_low_job_waits_then_follows_the_policy(home, gpu_world):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY)
    worker, store, settings, _ = worker_for(home, comfy, ollama, **{"max_wait_s.LOW": 1.0})
    (job_id,) = enqueue(store, settings, priority="LOW", quality="high")
    drive(worker, lambda: store.get(job_id).phase_detail is not None)
    job = store.get(job_id)
    assert job.status == "queued"
    assert job.phase_detail == "waiting for VRAM: need 14.0 GB, free 10.0 GB"
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    kinds = [e["kind"] for e in store.events(job_id)]
    assert kinds.index("vram_wait") < kinds.index("swap")


def test_stuck_unload_times_out_with_a_clear_event(home, gpu_world):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY)
    ollama.stuck_stopping(HEAVY)
    ledger.total = 26 * GIB  # 12 GB free: short of zmm's 14 (with reserve), enough for SDXL itself
    worker, store, settings, notices = worker_for(home, comfy, ollama)
    (job_id,) = enqueue(store, settings, priority="CRITICAL", quality="high")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    stuck = [e for e in store.events(job_id) if e["kind"] == "swap_stuck"]
    assert stuck and HEAVY in stuck[0]["message"] and "pid 4242" in stuck[0]["message"]
    assert any("did not release" in text for text in notices)


@pytest.mark.slow
def test_kill_9_during_a_swap_restores_the_llms_on_restart(home, gpu_world, tmp_path):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY, keep_alive=3600)
    comfy.hang(True)  # the job runs forever: the worker is killed mid-job, LLM swapped out
    nvml_file = persist(ledger, tmp_path / "nvml.json")
    env = {"ZMM_COMFYUI_URL": comfy.url, "ZMM_OLLAMA_URL": ollama.url, "ZMM_TEST_NVML": str(nvml_file),
           "ZMM_WORKER_POLL_S": "0.05", "ZMM_OLLAMA_QUEUE_END_DELAY_S": "0.2",
           "ZMM_WORKER_LEASE_S": "1"}
    with Store(load(home).spool_path) as store:
        (job_id,) = enqueue(store, load(home), priority="HIGH", quality="high")
        worker = LiveProcess("serve-worker", "--no-progress", env=env)
        wait_until(lambda: HEAVY not in ollama.loaded and store.get_state(SWAP_KEY), timeout=20)
        worker.kill()
        worker.wait()
        assert store.get_state(SWAP_KEY)["models"][0]["name"] == HEAVY
        store.cancel([job_id])  # no more image work: the restarted worker should restore
        comfy.hang(False)
        again = LiveProcess("serve-worker", "--no-progress", env=env)
        try:
            wait_until(lambda: HEAVY in ollama.loaded and store.get_state(SWAP_KEY) is None,
                       timeout=30, message="the LLM to be reloaded")
        finally:
            again.signal(signal.SIGTERM)
            again.wait()


@pytest.mark.slow
def test_gpu_status_without_a_driver(home):
    result = run_zmm("gpu", "status")  # every test's NVML has no driver unless it asks
    assert result.returncode == 4
    assert result.stderr.splitlines()[0] == "error: no NVIDIA driver: Driver Not Loaded"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_gpu_status_table_and_json_with_the_fake_nvml(home, gpu_world, tmp_path):
    ledger, ollama, comfy = gpu_world
    ollama.preload(HEAVY)
    env = {"ZMM_TEST_NVML": str(persist(ledger, tmp_path / "nvml.json")), "ZMM_COMFYUI_URL": comfy.url}
    data = json.loads(run_zmm("gpu", "status", "--json", env=env).stdout)
    (card,) = data["nvml"]["gpus"]
    assert card["name"] == "NVIDIA GeForce RTX 4090" and card["total_bytes"] == 24 * GIB
    assert card["free_bytes"] == 10 * GIB
    assert [(p["pid"], p["role"]) for p in card["processes"]] == [(4242, "ollama")]
    assert data["comfyui"]["devices"][0]["type"] == "cuda"
    table = run_zmm("gpu", "status", env=env)
    assert table.returncode == 0 and "RTX 4090" in table.stdout and "ollama" in table.stdout


@pytest.mark.slow
def test_models_list_load_unload(home, gpu_world, tmp_path):
    ledger, ollama, comfy = gpu_world
    env = {"ZMM_TEST_NVML": str(persist(ledger, tmp_path / "nvml.json")),
           "ZMM_COMFYUI_URL": comfy.url, "ZMM_OLLAMA_URL": ollama.url}
    loaded = run_zmm("models", "load", "qwen2.5:7b", "--keep-alive", "5m", env=env)
    assert loaded.returncode == 0 and "qwen2.5:7b loaded: 7.0 GB in VRAM" in loaded.stdout
    data = json.loads(run_zmm("models", "list", "--json", env=env).stdout)
    assert {m["name"] for m in data["image"]} == set(comfy.checkpoints)
    assert next(m for m in data["image"] if "xl" in m["name"])["vram_need_bytes"] == 12 * 1024**3
    qwen = next(m for m in data["llm"] if m["name"] == "qwen2.5:7b")
    assert qwen["loaded"] and qwen["size_vram_bytes"] == 7 * GIB
    gone = run_zmm("models", "unload", "qwen2.5:7b", env=env)
    assert gone.returncode == 0 and "qwen2.5:7b: unloaded" in gone.stdout
    assert "VRAM free: 17.0 GB -> 24.0 GB" in gone.stdout
    missing = run_zmm("models", "load", "nope", env=env)
    assert missing.returncode == 3 and "not found" in missing.stderr
