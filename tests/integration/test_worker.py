"""serve-worker and inline generate against the fake ComfyUI, as real processes."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until
from zmm.assets import read_text_chunks
from zmm.store import Store


def spool(settings) -> Store:
    return Store(settings.spool_path)


def enqueue(*args: str) -> list[str]:
    result = run_zmm("generate", *args, "--no-wait", "--size", "64x64", "--steps", "3")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.slow
def test_paused_jobs_run_in_priority_order_once_resumed(worker_env, settings, comfy):
    assert run_zmm("queue", "pause").returncode == 0
    low = enqueue("low job", "--priority", "LOW")
    medium = enqueue("medium job", "--priority", "MEDIUM")
    critical = enqueue("critical job", "--priority", "CRITICAL")
    high = enqueue("high job", "--priority", "HIGH", "--count", "2")
    paused = run_zmm("serve-worker", "--once", "--no-progress")
    assert paused.returncode == 0 and comfy.runs == []
    assert run_zmm("queue", "resume").returncode == 0
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "worker stopped: 5 succeeded, 0 other" in result.stderr
    ran = [run["prompt_id"] for run in comfy.runs]
    assert ran == critical + high + medium + low
    with spool(settings) as store:
        jobs = store.get_many(ran)
    assert all(job.status == "succeeded" and job.attempts == 0 for job in jobs)


@pytest.mark.slow
def test_outputs_metadata_and_history_are_complete(worker_env, settings, comfy):
    (job_id,) = enqueue("a red square", "--seed", "42", "--negative", "blue")
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=60)
    assert result.returncode == 0, result.stderr
    with spool(settings) as store:
        job = store.get(job_id)
        events = [e["kind"] for e in store.events(job_id)]
    assert job.status == "succeeded" and job.backend == "local"
    assert job.output_path == f"images/{job.created_at[:7]}/{job_id}.png"
    path = settings.assets_dir / job.output_path
    data = path.read_bytes()
    assert job.file_size_bytes == len(data) and len(job.sha256) == 64
    assert (job.width, job.height) == (64, 64)
    assert job.model_used == "sd_xl_base_1.0.safetensors" and job.generation_time_s > 0
    assert (job.progress_value, job.progress_max) == (3, 3)
    assert job.thumbnail_path == job.output_path.replace(".png", ".thumb.webp")
    assert (settings.assets_dir / job.thumbnail_path).read_bytes()[8:12] == b"WEBP"
    chunks = read_text_chunks(data)
    assert json.loads(chunks["prompt"])["3"]["inputs"]["seed"] == 42
    meta = json.loads(chunks["zmm"])
    assert meta["job_id"] == job_id and meta["seed"] == 42 and meta["negative"] == "blue"
    assert meta["prompt"] == "a red square" and meta["width"] == 64
    assert events[:2] == ["enqueued", "claimed"] and events[-1] == "succeeded"
    folder = path.parent
    while folder != settings.home.parent:  # every folder zmm made is user-only
        assert folder.stat().st_mode & 0o077 == 0, folder
        folder = folder.parent
    assert path.stat().st_mode & 0o077 == 0
    assert comfy.submissions[0]["prompt_id"] == job_id
    # the PNG brings back exactly that job
    again = run_zmm("generate", "--from-image", str(path), "--no-wait", "--json")
    requeued = json.loads(again.stdout)["jobs"][0]
    assert (requeued["prompt"], requeued["seed"], requeued["width"]) == ("a red square", 42, 64)


@pytest.mark.slow
def test_generate_without_a_worker_runs_inline(worker_env, settings, comfy):
    result = run_zmm("generate", "inline please", "--size", "64x64", "--steps", "2", timeout=60)
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert path.endswith(".png") and (settings.assets_dir / "images").exists()
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_checkpoint_the_server_lacks_is_refused_at_enqueue_with_its_list(worker_env, settings,
                                                                          comfy):
    result = run_zmm("generate", "x", "--model", "nope.safetensors", "--no-wait")
    assert result.returncode == 3
    assert "checkpoint 'nope.safetensors' is on no backend; default has: " in result.stderr
    assert "sd_xl_base_1.0.safetensors" in result.stderr
    if settings.spool_path.exists():
        with spool(settings) as store:
            assert store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert comfy.submissions == []


@pytest.mark.slow
def test_a_checkpoint_gone_after_enqueue_leaves_the_job_queued_with_the_reason(worker_env,
                                                                              settings, comfy):
    (job_id,) = enqueue("x", "--model", "sdxl")
    comfy.set_checkpoints(["v1-5-pruned-emaonly.safetensors"])
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=60)
    assert result.returncode == 0, result.stderr  # nothing it can run: done
    with spool(settings) as store:
        job = store.get(job_id)
        files = {row["name"]: row["files"] for row in store.backends()}
    assert (job.status, job.attempts) == ("queued", 0)
    assert "checkpoints/sd_xl_base_1.0.safetensors" not in files["default"]
    assert comfy.submissions == []


@pytest.mark.slow
def test_comfyui_down_then_up_completes_without_using_attempts(worker_env, settings, comfy):
    comfy.stop()
    ids = enqueue("patience", "--count", "2")
    worker = LiveProcess("serve-worker", "--no-progress")
    try:
        line = worker.wait_for_line("waiting for ComfyUI at")
        assert comfy.url in line and "retrying in" in line
        comfy.start()
        with spool(settings) as store:
            wait_until(lambda: all(store.get(i).status == "succeeded" for i in ids), timeout=30)
            assert [store.get(i).attempts for i in ids] == [0, 0]
    finally:
        worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


@pytest.mark.slow
def test_second_worker_for_the_same_server_exits_with_conflict(worker_env, comfy):
    first = LiveProcess("serve-worker", "--no-progress")
    try:
        first.wait_for_line("connected to ComfyUI")
        second = run_zmm("serve-worker", "--once", "--no-progress")
        assert second.returncode == 5
        assert "already held by pid" in second.stderr
    finally:
        first.signal(signal.SIGINT)
    assert first.wait() == 0


@pytest.mark.slow
def test_generate_unreachable_comfyui_exits_4_and_keeps_the_job(worker_env, settings, comfy):
    comfy.stop()
    result = run_zmm("generate", "x", "--size", "64x64", timeout=60)
    assert result.returncode == 4
    assert comfy.url in result.stderr and "stay queued" in result.stderr
    with spool(settings) as store:
        (row,) = store.conn.execute("SELECT status FROM jobs").fetchall()
    assert row[0] == "queued"


@pytest.mark.slow
def test_generate_follows_a_running_worker_instead_of_running_inline(worker_env, settings, comfy):
    worker = LiveProcess("serve-worker", "--no-progress")
    try:
        worker.wait_for_line("connected to ComfyUI")
        result = run_zmm("generate", "followed", "--size", "64x64", "--steps", "2", "--json",
                         timeout=60)
        assert result.returncode == 0, result.stderr
        (job,) = json.loads(result.stdout)["jobs"]
        assert job["status"] == "succeeded"
        assert job["worker_id"].split(":")[1] == str(worker.process.pid)  # the worker ran it
    finally:
        worker.signal(signal.SIGINT)
    assert worker.wait() == 0


@pytest.mark.slow
def test_ctrl_c_stops_a_worker_waiting_for_comfyui_at_once(home):
    import time

    worker = LiveProcess("serve-worker", "--no-progress",  # ComfyUI: the tests' closed port
                         env={"ZMM_HOME": str(home), "ZMM_COMFYUI_RETRY_MAX_S": "60"})
    worker.wait_for_line("retrying in 4s")
    worker.signal(signal.SIGINT)
    started = time.monotonic()
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 2  # not the rest of a 4 s wait


@pytest.mark.slow
def test_sigterm_ends_a_worker_whose_comfyui_stopped_answering(worker_env, settings, comfy):
    """A frozen server (as with SIGSTOP) holds no stop: the worker exits within
    seconds, its job left running for the next worker, which finishes it."""
    import time

    comfy.step_time = 0.05
    queued = run_zmm("generate", "frozen", "--no-wait", "--size", "64x64", "--steps", "60")
    (job_id,) = queued.stdout.split()
    worker = LiveProcess("serve-worker", "--no-progress")
    try:
        with spool(settings) as store:
            wait_until(lambda: store.get(job_id).phase == "sampling", timeout=30)
        comfy.freeze()
        time.sleep(1.0)  # the worker's next calls now wait on a server that does not answer
        worker.signal(signal.SIGTERM)
        started = time.monotonic()
        code = worker.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        comfy.freeze(False)
    assert code == 0, worker.stderr
    assert took < 10, f"exited {took:.1f}s after SIGTERM"
    assert any("left running for the next worker" in line for line in worker.stderr)
    with spool(settings) as store:
        assert store.get(job_id).status == "running"
        (row,) = store.backends()
        assert (row["state"], row["worker_id"]) == ("stopped", None)  # as after any stop
        assert [w["pid"] for w in store.live_workers(lease_s=3600.0)] == [worker.process.pid]
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "worker stopped: 1 succeeded, 0 other" in result.stderr
    with spool(settings) as store:
        job = store.get(job_id)
    assert (job.status, job.attempts) == ("succeeded", 0) and len(comfy.submissions) == 1
