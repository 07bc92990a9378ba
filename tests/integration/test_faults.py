"""Faults: nothing lost, nothing run twice, clear errors. The worker runs
in-process (driven by run_once) against the fake ComfyUI, or as a real
process where signals and kill -9 are the point."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest

from tests.conftest import LiveProcess, run_zmm
from tests.workers import make_worker as build_test_worker
from zmm import intake
from zmm.backends.comfy import ComfyClient
from zmm.config import load
from zmm.store import Store
from zmm.worker.loop import Worker


def enqueue(settings, count=1, **fields):
    with Store(settings.spool_path) as store:
        raw = {"prompt": "fault test", "size": "64x64", "steps": "3", "count": count, **fields}
        raw = {key: value for key, value in raw.items() if value is not None}
        specs = intake.build(raw, settings)
        return [job.id for job in store.enqueue(specs)]


def make_worker(home, comfy, **overrides) -> tuple[Worker, Store]:
    settings = load(home)
    settings.override("comfyui.url", comfy.url)
    settings.override("worker.poll_s", 0.05)
    settings.override("worker.backoff_s", 0.1)
    for key, value in overrides.items():
        settings.override(key.replace("__", "."), value)
    store = Store(settings.spool_path)
    return build_test_worker(store, ComfyClient(comfy.url, timeout=5), settings), store


def drive(worker: Worker, until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached while driving the worker"
        worker.run_once()


def status(store: Store, job_id: str) -> str:
    return store.get(job_id).status


def test_websocket_drop_mid_job_loses_nothing_and_never_resubmits(home, settings, comfy):
    comfy.step_time = 0.2
    (job_id,) = enqueue(settings, steps="5")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: store.get(job_id).phase == "sampling")
    comfy.drop_websockets()
    drive(worker, lambda: status(store, job_id) == "succeeded")
    assert [s["prompt_id"] for s in comfy.submissions] == [job_id]
    assert store.get(job_id).attempts == 0


def test_silence_interrupts_and_requeues_with_backoff(home, settings, comfy):
    (job_id,) = enqueue(settings, steps="20")
    comfy.step_time = 0.05
    worker, store = make_worker(home, comfy, comfyui__silence_timeout_s=0.5)
    drive(worker, lambda: store.get(job_id).phase == "sampling")
    comfy.hang(True)
    drive(worker, lambda: status(store, job_id) == "queued")
    comfy.hang(False)
    job = store.get(job_id)
    assert job.attempts == 1 and job.not_before is not None
    assert comfy.interrupts, "the worker must POST /interrupt on silence"
    drive(worker, lambda: status(store, job_id) == "succeeded")


def test_execution_error_fails_with_comfyuis_words_and_no_retry(home, settings, comfy):
    comfy.fail_next_execution(node_type="KSampler", exception_type="RuntimeError",
                              message="mat1 and mat2 shapes cannot be multiplied")
    (job_id,) = enqueue(settings)
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "failed")
    message = store.get(job_id).error_message
    assert "KSampler" in message and "RuntimeError" in message and "mat1 and mat2" in message
    assert len(comfy.submissions) == 1


def test_out_of_memory_frees_vram_and_retries_once_on_sd15(home, settings, comfy):
    comfy.oom_next_execution()
    (job_id,) = enqueue(settings, quality="standard", size=None, aspect="16:9")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "succeeded")
    assert comfy.frees and comfy.frees[0].get("free_memory") is True
    assert [s["prompt_id"] for s in comfy.submissions] == [job_id, f"{job_id}-r1"]
    job = store.get(job_id)
    assert job.attempts == 1 and job.model_used == "v1-5-pruned-emaonly.safetensors"
    assert (job.width, job.height) == (768, 432)
    assert "downgrade" in [e["kind"] for e in store.events(job_id)]


def test_out_of_memory_twice_fails_without_more_retries(home, settings, comfy):
    comfy.oom_next_execution()
    comfy.oom_next_execution()
    (job_id,) = enqueue(settings, quality="high")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "failed")
    job = store.get(job_id)
    assert "out of GPU memory again" in job.error_message
    assert job.model_requested == "sd_xl_base_1.0.safetensors"  # high quality never downgrades
    assert len(comfy.submissions) == 2


def test_comfyui_restart_mid_job_resubmits_never_records_done(home, settings, comfy):
    comfy.step_time = 0.2
    (job_id,) = enqueue(settings, steps="10")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: store.get(job_id).phase == "sampling")
    comfy.restart()
    drive(worker, lambda: status(store, job_id) == "succeeded", timeout=30)
    job = store.get(job_id)
    assert job.attempts == 1 and (job.progress_value, job.progress_max) == (10, 10)
    assert [s["prompt_id"] for s in comfy.submissions] == [job_id, f"{job_id}-r1"]


def test_ambiguous_500_on_submit_is_checked_before_resubmitting(home, settings, comfy):
    comfy.fail_next_submits(1, status=500, accept_then_500=True)
    (job_id,) = enqueue(settings)
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "succeeded")
    assert len(comfy.submissions) == 1  # found in /queue, so never posted twice


def test_plain_500_on_submit_requeues_with_backoff(home, settings, comfy):
    comfy.fail_next_submits(1, status=500)
    (job_id,) = enqueue(settings)
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "succeeded")
    assert store.get(job_id).attempts == 1


def test_cancel_a_running_job(home, settings, comfy):
    comfy.step_time = 0.1
    (job_id,) = enqueue(settings, steps="50")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: store.get(job_id).phase == "sampling")
    assert [(r.id, r.result) for r in store.cancel([job_id])] == [(job_id, "cancel requested")]
    drive(worker, lambda: status(store, job_id) == "cancelled")
    assert comfy.interrupts


def test_critical_job_goes_ahead_of_the_submitted_ahead_job(home, settings, comfy):
    comfy.step_time = 0.1
    first, second = enqueue(settings, count=2, steps="10", priority="LOW")
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: store.get(first).phase == "sampling" and len(worker.inflight) == 2)
    (critical,) = enqueue(settings, priority="CRITICAL")
    drive(worker, lambda: all(status(store, i) == "succeeded" for i in (first, second, critical)),
          timeout=30)
    order = [run["prompt_id"] for run in comfy.runs if run["status"] == "success"]
    assert order == [first, critical, second]
    assert store.get(second).attempts == 0


@pytest.mark.slow
def test_kill_9_at_random_points_every_job_once_one_file_each(home, settings, comfy, monkeypatch):
    comfy.step_time = 0.02
    ids = enqueue(settings, count=50)
    env = {"ZMM_COMFYUI_URL": comfy.url, "ZMM_WORKER_LEASE_S": "1", "ZMM_WORKER_POLL_S": "0.05"}
    rng = random.Random(1234)
    kills = 0
    with Store(settings.spool_path) as store:
        def done() -> bool:
            return all(store.get(i).status == "succeeded" for i in ids)

        deadline = time.monotonic() + 240
        while not done():
            assert time.monotonic() < deadline, "jobs did not all finish"
            worker = LiveProcess("serve-worker", "--no-progress", env=env)
            time.sleep(rng.uniform(0.3, 1.5))  # a random point in the run
            if done():
                worker.signal(signal.SIGTERM)
                worker.wait()
                break
            worker.kill()
            worker.wait()
            kills += 1
        statuses = Counter(store.get(i).status for i in ids)
    assert statuses == {"succeeded": 50}
    files = sorted(p.name for p in (settings.assets_dir / "images").rglob("*.png"))
    assert files == sorted(f"{i}.png" for i in ids), "exactly one file per job"
    success_runs = Counter(r["prompt_id"].split("-r")[0] for r in comfy.runs if r["status"] == "success")
    assert max(success_runs.values()) == 1, "a job ran to success twice on ComfyUI"
    print(f"50 jobs, {kills} kill -9s, {len(comfy.submissions)} submissions")


@pytest.mark.slow
def test_sigint_finishes_the_running_job_then_exits_0(worker_env, settings, comfy):
    comfy.step_time = 0.1
    (job_id,) = enqueue(settings, steps="15")
    worker = LiveProcess("serve-worker", "--no-progress")
    worker.wait_for_line(f"{job_id} sampling")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    with Store(settings.spool_path) as store:
        assert store.get(job_id).status == "succeeded"
    assert run_zmm("serve-worker", "--once", "--no-progress").returncode == 0  # lock released


@pytest.mark.slow
def test_sigterm_interrupts_and_requeues_at_once(worker_env, settings, comfy):
    comfy.step_time = 0.2
    (job_id,) = enqueue(settings, steps="50")
    worker = LiveProcess("serve-worker", "--no-progress")
    worker.wait_for_line(f"{job_id} sampling")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    with Store(settings.spool_path) as store:
        job = store.get(job_id)
    assert job.status == "queued" and job.attempts == 0
    assert comfy.interrupts


@pytest.mark.slow
def test_second_sigint_interrupts_the_running_job(worker_env, settings, comfy):
    comfy.step_time = 0.2
    (job_id,) = enqueue(settings, steps="50")
    worker = LiveProcess("serve-worker", "--no-progress")
    worker.wait_for_line(f"{job_id} sampling")
    worker.signal(signal.SIGINT)
    time.sleep(0.2)  # two distinct presses of Ctrl-C
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=20) == 0
    with Store(settings.spool_path) as store:
        assert store.get(job_id).status == "queued"


def test_unwritable_assets_folder_fails_cleanly(home, settings, comfy):
    (job_id,) = enqueue(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.assets_dir.write_text("not a folder")  # works even as root, unlike chmod
    worker, store = make_worker(home, comfy)
    drive(worker, lambda: status(store, job_id) == "failed")
    job = store.get(job_id)
    assert "cannot save" in job.error_message and job.output_path is None
    assert settings.assets_dir.read_text() == "not a folder"
    assert [e["kind"] for e in store.events(job_id)][-1] == "failed"
