"""Each backend's VRAM gate reads its own GPU and swaps its own Ollama: two fake
GPUs through the NVML seam (one VRAM ledger each, shared with that GPU's fake
Ollama and fake ComfyUI), and a remote backend read through its fake
ComfyUI's /system_stats without touching NVML."""

from __future__ import annotations

import time

import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import LedgerNvml, fake_nvml_gpus, gpus_state
from tests.fakes.ollama import FakeOllama
from tests.fakes.vram import GIB, VramLedger
from tests.workers import make_worker
from zmm import config, intake
from zmm.backends import gpu
from zmm.backends.comfy import ComfyClient
from zmm.backends.vram_source import VramSource
from zmm.config import fleet
from zmm.store import Store
from zmm.vram.gate import SWAP_KEY
from zmm.worker import service

HEAVY = "llama3.1:13b"


class CountingNvml(LedgerNvml):
    def __init__(self, *ledgers: VramLedger) -> None:
        super().__init__(lambda: gpus_state(*ledgers))
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        super().nvmlInit()


@pytest.fixture
def two_gpus(tmp_path):
    """GPU 0 and GPU 1, each with its own ledger, Ollama and ComfyUI."""
    ledgers = [VramLedger(total_bytes=24 * GIB), VramLedger(total_bytes=16 * GIB)]
    servers = []
    for index, ledger in enumerate(ledgers):
        ollama = FakeOllama(models={HEAVY: 14 * GIB}, ledger=ledger).start()
        comfy = FakeComfyUI(ledger=ledger, output_dir=tmp_path / f"out{index}").start()
        servers.append((ledger, ollama, comfy))
    try:
        with gpu.use_backend(fake_nvml_gpus(*ledgers)):
            yield servers
    finally:
        for _, ollama, comfy in servers:
            comfy.stop()
            ollama.stop()


def two_backends(home, servers, **overrides) -> config.Config:
    text = "".join(f'[[backends]]\nname = "gpu{index}"\nurl = "{comfy.url}"\ngpu = {index}\n'
                   f'ollama = "{ollama.url}"\n\n'
                   for index, (_, ollama, comfy) in enumerate(servers))
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    settings = config.load(home)
    for key, value in {"worker.poll_s": 0.05, "ollama.queue_end_delay_s": 0.2,
                       "ollama.unload_timeout_s": 2.0, **overrides}.items():
        settings.override(key, value)
    return settings


def test_a_local_backend_reads_its_own_nvml_index(home, two_gpus):
    (ledger0, _, _), (ledger1, _, _) = two_gpus
    ledger1.allocate("other:blender", 5 * GIB, pid=77, process_name="blender")
    first, second = VramSource(0), VramSource(1)
    assert first.read().total_bytes == 24 * GIB and first.free_bytes() == 24 * GIB
    assert second.read().total_bytes == 16 * GIB and second.free_bytes() == 11 * GIB
    assert second.used_bytes() == 5 * GIB and first.used_bytes() == 0
    assert VramSource(2).read() is None  # no such GPU: unknown, not a failure


def test_a_remote_backend_reads_system_stats_and_never_nvml(tmp_path):
    ledger = VramLedger(total_bytes=48 * GIB)
    ledger.allocate("comfyui:other", 8 * GIB, pid=5, process_name="python main.py")
    nvml = CountingNvml(VramLedger(total_bytes=8 * GIB))
    comfy = FakeComfyUI(ledger=ledger, output_dir=tmp_path / "out").start()
    client = ComfyClient(comfy.url, timeout=5)
    try:
        with gpu.use_backend(nvml):
            remote = VramSource(None, client)
            reading = remote.read()
            assert (reading.total_bytes, reading.free_bytes) == (48 * GIB, 40 * GIB)
            ledger.allocate("comfyui:more", 4 * GIB, pid=5, process_name="python main.py")
            assert remote.free_bytes() == 36 * GIB and remote.used_bytes() == 12 * GIB
        comfy.stop()
        assert remote.read() is None  # unreachable: VRAM unknown
    finally:
        client.close()
        comfy.stop()
    assert nvml.inits == 0


def test_the_gate_of_gpu1_unloads_gpu1s_ollama_only(home, two_gpus):
    (ledger0, ollama0, _), (ledger1, ollama1, comfy1) = two_gpus
    ollama0.preload(HEAVY, keep_alive=3600)
    ollama1.preload(HEAVY, keep_alive=3600)
    assert ledger1.free == 2 * GIB  # SDXL needs 12 + 2 GB: only a swap makes room on GPU 1
    settings = fleet.settings_for(two_backends(home, two_gpus), fleet.backend(
        config.load(home), "gpu1"))
    assert settings.get("ollama.url") == ollama1.url
    store = Store(settings.spool_path)
    client = ComfyClient(comfy1.url, timeout=5)
    try:
        vram = service.make_vram(settings, client)
        gate = service.make_gate(store, settings, lambda _text: None, vram)
        assert gate.free_bytes() == ledger1.free and gate.gpu_index == 1
        worker = make_worker(store, client, settings, gate=gate, vram=vram)
        raw = {"prompt": "diagram", "steps": "2", "size": "64x64", "quality": "high",
               "priority": "HIGH"}
        (job_id,) = [job.id for job in store.enqueue(intake.build(raw, settings))]
        deadline = time.monotonic() + 20
        while store.get(job_id).status != "succeeded":
            assert time.monotonic() < deadline, store.events(job_id)
            worker.run_once()
        assert "swap" in [event["kind"] for event in store.events(job_id)]
        unloads1 = [body["model"] for _, _, body in ollama1.requests
                    if body.get("keep_alive") == 0]
        unloads0 = [body for _, _, body in ollama0.requests if body.get("keep_alive") == 0]
        assert unloads1 == [HEAVY] and unloads0 == []
        assert HEAVY in ollama0.loaded and ledger0.free == 10 * GIB  # GPU 0 untouched
        while HEAVY not in ollama1.loaded:  # image work over: GPU 1's Ollama gets it back
            assert time.monotonic() < deadline, "not reloaded"
            worker.run_once()
        reloads0 = [body for _, _, body in ollama0.requests if body.get("keep_alive") != 0
                    and body.get("model")]
        assert reloads0 == []
        # The swap was kept under the backend's own key (now cleared), never the default's.
        assert store.get_state("swap:gpu1", "never set") is None
        assert store.get_state(SWAP_KEY, "never set") == "never set"
    finally:
        client.close()
        store.close()


def test_a_remote_backends_gate_says_vram_comes_from_its_server(home, tmp_path):
    comfy = FakeComfyUI(output_dir=tmp_path / "out").start()  # a CPU device: RAM as "vram"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[[backends]]\nname = "box"\nurl = "{comfy.url}"\n')
    settings = fleet.settings_for(config.load(home), fleet.backend(config.load(home), "box"))
    client = ComfyClient(comfy.url, timeout=5)
    try:
        with Store(settings.spool_path) as store:
            vram = service.make_vram(settings, client)
            gate = service.make_gate(store, settings, lambda _text: None, vram)
            assert gate.gpu_index is None and gate.free_bytes() == 24170430464
            assert gate.ollama is None  # no Ollama configured for this backend: no swap
    finally:
        client.close()
        comfy.stop()
