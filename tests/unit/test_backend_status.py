"""The backend's row written by the in-memory worker loop (state, GPU memory,
loaded model, last error, stopped at the end) and the drain switch it obeys:
the running job finishes, nothing more is claimed, resume claims again."""

from __future__ import annotations

import pytest

from tests.conftest import closed_url
from tests.fakes.nvml import fake_nvml_gpus
from tests.fakes.vram import GIB, VramLedger
from tests.unit.test_worker_loop import Loop
from zmm import config
from zmm.backends import gpu
from zmm.backends.vram_source import VramSource
from zmm.config import fleet
from zmm.errors import ComfyUnavailable


@pytest.fixture
def backend_loop(home, comfy):
    """A Worker serving backend `gpu1` (NVML index 1 of two fake GPUs)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[[backends]]\nname = "gpu0"\nurl = "{closed_url()}"\ngpu = 0\n\n'
        f'[[backends]]\nname = "gpu1"\nurl = "{comfy.url}"\ngpu = 1\n')
    loaded = config.load(home)
    settings = fleet.settings_for(loaded, fleet.backend(loaded, "gpu1"))
    ledgers = [VramLedger(total_bytes=24 * GIB), VramLedger(total_bytes=16 * GIB)]
    ledgers[1].allocate("other:blender", 4 * GIB, pid=9, process_name="blender")
    made: list[Loop] = []

    def make(**kwargs) -> Loop:
        made.append(Loop(settings, comfy, vram=VramSource(1), **kwargs))
        made[-1].worker.status.every_s = 0.0  # a row every heartbeat, not every 2 s
        return made[-1]

    with gpu.use_backend(fake_nvml_gpus(*ledgers)):
        yield make
    for each in made:
        each.close()


def row(loop: Loop, name: str = "gpu1") -> dict:
    return next(item for item in loop.store.backends() if item["name"] == name)


def test_the_row_says_up_with_its_gpu_memory_and_the_model_of_the_last_job(backend_loop, comfy):
    w = backend_loop()
    (job_id,) = w.enqueue()
    w.drive(lambda: w.status(job_id) == "succeeded")
    w.drive(lambda: row(w)["loaded_model"] is not None)
    found = row(w)
    assert (found["state"], found["worker_id"], found["gpu"], found["url"]) == (
        "up", w.worker.id, 1, comfy.url)
    assert (found["vram_total_bytes"], found["vram_free_bytes"]) == (16 * GIB, 12 * GIB)
    assert found["loaded_model"] == w.store.get(job_id).model_requested
    assert found["managed"] is False and found["restarts"] == 0 and found["last_error"] is None
    workers = w.store.live_workers(lease_s=3600.0)
    assert [(item["id"], item["backend"]) for item in workers] == [(w.worker.id, "gpu1")]


def test_comfyui_down_is_state_down_with_the_error_and_stop_writes_stopped(backend_loop, comfy):
    w = backend_loop()
    w.worker.run_once()
    assert row(w)["state"] == "up"
    comfy.stop()
    w.drive(lambda: row(w)["state"] == "down")
    found = row(w)
    assert found["last_error"].startswith("ComfyUI unreachable: ")
    assert found["last_error_at"] is not None and found["worker_id"] == w.worker.id
    assert found["vram_total_bytes"] is None  # not read from a server known to be down
    w.worker.request_stop("now")
    w.worker.run()
    found = row(w)
    assert (found["state"], found["worker_id"]) == ("stopped", None)
    assert found["last_error"].startswith("ComfyUI unreachable: ")  # kept for `zmm backends`


def test_drain_finishes_the_running_job_claims_no_more_and_resume_claims_again(
        backend_loop, comfy):
    comfy.step_time = 0.03
    w = backend_loop()
    first, second, third = w.enqueue(count=3, steps="10")
    w.drive(lambda: w.store.get(first).phase == "sampling")
    w.store.set_draining("gpu1", comfy.url, True)
    w.drive(lambda: w.status(first) == "succeeded", timeout=30)
    # the one already submitted ahead finishes too; nothing more is taken
    w.drive(lambda: not w.worker.inflight, timeout=30)
    for _ in range(50):
        w.worker.run_once()
        w.clock.advance(w.worker.poll_s)
    assert w.status(third) == "queued" and w.worker.done is False
    ran = [run["prompt_id"] for run in comfy.runs]
    assert third not in ran and ran[0] == first
    assert row(w)["draining"] is True and row(w)["state"] == "up"  # alive, heartbeating
    w.store.set_draining("gpu1", comfy.url, False)
    w.drive(lambda: all(w.status(job) == "succeeded" for job in (first, second, third)),
            timeout=30)


def test_once_with_a_drained_backend_ends_without_claiming(backend_loop, comfy):
    w = backend_loop(once=True)
    (job_id,) = w.enqueue()
    w.store.set_draining("gpu1", comfy.url, True)
    w.worker.run()
    assert w.status(job_id) == "queued" and comfy.runs == []
    assert row(w)["state"] == "stopped"


def test_once_with_a_drained_backend_and_comfyui_down_ends_too(backend_loop, comfy):
    w = backend_loop(once=True)
    w.enqueue()
    w.store.set_draining("gpu1", comfy.url, True)
    comfy.stop()
    try:
        w.worker.run()
    except ComfyUnavailable:  # pragma: no cover - the failure this test guards against
        pytest.fail("a drained --once worker asked a ComfyUI it had nothing to send to")
