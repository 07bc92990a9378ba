"""LoRA, image-to-image and hires jobs end to end: intake, the worker (in-process,
driven by run_once) against the fake ComfyUI, the saved PNG's metadata,
`--from-image`, the upload after a worker restart, two-pass progress and cleanup
of the init image's copy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.workers import make_worker
from zmm import assets, intake
from zmm.backends.comfy import ComfyClient
from zmm.cli.generate import keep_inputs
from zmm.cli.render import describe_job
from zmm.config import load
from zmm.errors import NotFound
from zmm.intake import server_files
from zmm.retention import cleanup
from zmm.retention.plan import Criteria
from zmm.store import Store
from zmm.worker.loop import Worker

LORAS = ["detail.safetensors", "style.safetensors"]


@pytest.fixture
def comfy_options() -> dict:
    return {"loras": LORAS}


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (100, 77), (200, 10, 10)).save(path)
    return path


def settings_for(home, comfy):
    settings = load(home)
    settings.override("comfyui.url", comfy.url)
    settings.override("worker.poll_s", 0.05)
    settings.override("worker.backoff_s", 0.05)
    return settings


def enqueue(settings, **fields) -> list[str]:
    raw = {"prompt": "parts test", "size": "64x64", "steps": "2", "quality": "draft",
           "seed": "5", **fields}
    specs = intake.build({k: v for k, v in raw.items() if v is not None}, settings)
    with Store(settings.spool_path) as store:
        server_files.check_server_files(specs, settings, store.backends())
    keep_inputs(specs, settings.assets_dir)
    with Store(settings.spool_path) as store:
        return [job.id for job in store.enqueue(specs)]


def drive(worker: Worker, until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached while driving the worker"
        worker.run_once()


def run_to_end(settings, comfy, job_id: str, worker: Worker | None = None):
    with Store(settings.spool_path) as store:
        worker = worker or make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        drive(worker, lambda: store.get(job_id).status in ("succeeded", "failed"))
        return store.get(job_id)


def graph_of(comfy, index: int = -1) -> dict:
    return comfy.submissions[index]["prompt"]


def classes(graph: dict) -> list[str]:
    return sorted(node["class_type"] for node in graph.values())


def test_a_lora_job_runs_with_its_chain_and_is_reproduced_from_its_png(home, comfy):
    settings = settings_for(home, comfy)
    (job_id,) = enqueue(settings, lora=["detail.safetensors:0.7", "style.safetensors"])
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "succeeded", job.error_message
    loras = [node["inputs"] for node in graph_of(comfy).values()
             if node["class_type"] == "LoraLoader"]
    assert [(x["lora_name"], x["strength_model"]) for x in loras] == [
        ("detail.safetensors", 0.7), ("style.safetensors", 1.0)]
    png = job.output_file(settings.assets_dir)
    meta = assets.zmm_metadata(png)
    assert meta["loras"] == [{"name": "detail.safetensors", "strength": 0.7},
                             {"name": "style.safetensors", "strength": 1.0}]
    (again,) = intake.from_image(png, {}, settings)
    assert again.extra["loras"] == meta["loras"] and again.seed == job.seed
    assert again.model_pinned  # never downgraded under its LoRA


def test_a_lora_missing_at_enqueue_is_refused_listing_the_servers(home, comfy):
    settings = settings_for(home, comfy)
    with pytest.raises(NotFound) as caught:
        enqueue(settings, lora="nope.safetensors")
    assert "LoRA 'nope.safetensors' is on no backend; default has: " in caught.value.message
    assert "detail.safetensors, style.safetensors" in caught.value.message
    assert not settings.spool_path.exists() or not _job_count(settings)


def _job_count(settings) -> int:
    with Store(settings.spool_path) as store:
        return store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def test_a_lora_queued_while_comfyui_was_down_and_gone_later_waits_unclaimed(home, comfy):
    settings = settings_for(home, comfy)
    comfy.stop()
    (job_id,) = enqueue(settings, lora="detail.safetensors")  # unreachable: queued
    comfy.loras = ["other.safetensors"]
    comfy.start()
    (other,) = enqueue(settings)
    run_to_end(settings, comfy, other)
    with Store(settings.spool_path) as store:
        job = store.get(job_id)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
    assert not any(body["prompt_id"] == job_id for body in comfy.submissions)


def test_img2img_uses_zmms_copy_after_the_original_is_deleted(home, comfy, photo):
    settings = settings_for(home, comfy)
    (job_id,) = enqueue(settings, init_image=str(photo), denoise="0.35", size=None)
    photo.unlink()
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "succeeded", job.error_message
    assert (job.width, job.height) == (96, 72)  # the input's size rounded down to 8
    (upload,) = comfy.uploads
    sha = assets_sha(settings)
    assert upload == {"image": f"{sha}.png", "type": "input", "overwrite": "true",
                      "subfolder": "zmm", "answer": {"name": f"{sha}.png", "subfolder": "zmm",
                                                     "type": "input"}}
    graph = graph_of(comfy)
    assert "EmptyLatentImage" not in classes(graph)
    (load,) = [n for n in graph.values() if n["class_type"] == "LoadImage"]
    assert load["inputs"]["image"] == f"zmm/{sha}.png"
    meta = assets.zmm_metadata(job.output_file(settings.assets_dir))
    assert meta["denoise"] == 0.35 and meta["init_image"]["sha256"] == sha
    (again,) = intake.from_image(job.output_file(settings.assets_dir), {}, settings)
    assert again.extra["init_image"]["file"] == f"inputs/{sha}.png"
    assert (again.width, again.height) == (96, 72) and not again.extra["init_image"]["resize"]


def assets_sha(settings) -> str:
    (copy,) = (settings.assets_dir / "inputs").iterdir()
    return copy.stem


def test_img2img_with_a_size_resizes_first(home, comfy, photo):
    settings = settings_for(home, comfy)
    (job_id,) = enqueue(settings, init_image=str(photo), size="128x96")
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "succeeded" and (job.width, job.height) == (128, 96)
    assert "ImageScale" in classes(graph_of(comfy))


def test_the_upload_is_repeated_safely_by_a_restarted_worker(home, comfy, photo):
    settings = settings_for(home, comfy)
    (job_id,) = enqueue(settings, init_image=str(photo))
    comfy.fail_next_submits(1)  # uploaded, then POST /prompt fails: back to the queue
    with Store(settings.spool_path) as store:
        first = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        drive(first, lambda: store.get(job_id).status == "queued" and comfy.uploads)
    job = run_to_end(settings, comfy, job_id)  # a new worker: uploads again
    assert job.status == "succeeded"
    names = [upload["answer"]["name"] for upload in comfy.uploads]
    assert len(names) == 2 and len(set(names)) == 1
    assert comfy.input_files() == [f"zmm/{names[0]}"]


def test_an_upload_refused_fails_the_job_and_an_unreachable_server_keeps_it(home, comfy, photo):
    settings = settings_for(home, comfy)
    (refused,) = enqueue(settings, init_image=str(photo))
    comfy.fail_next_uploads(1, status=413)
    job = run_to_end(settings, comfy, refused)
    assert job.status == "failed" and "refused the upload" in job.error_message
    assert "HTTP 413" in job.error_message
    (waiting,) = enqueue(settings, init_image=str(photo), seed="6")
    comfy.fail_next_uploads(1, status=500)
    with Store(settings.spool_path) as store:
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        drive(worker, lambda: store.get(waiting).attempts == 1)  # a 5xx uses an attempt
        comfy.stop()
        for _ in range(3):
            worker.run_once()
        assert store.get(waiting).status == "queued"
        assert store.get(waiting).attempts == 1  # unreachable: no attempt used
        comfy.start()
        drive(worker, lambda: store.get(waiting).status == "succeeded")


def test_two_pass_progress_names_the_pass(home, comfy):
    settings = settings_for(home, comfy)
    comfy.step_time = 0.05
    (job_id,) = enqueue(settings, upscale="2", upscale_denoise="0.4", steps="3")
    seen: list[str] = []
    with Store(settings.spool_path) as store:
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)

        def done() -> bool:
            job = store.get(job_id)
            if job.status == "running":
                seen.append(describe_job(job))
            return job.status == "succeeded"

        drive(worker, done)
        job = store.get(job_id)
    assert (job.width, job.height) == (128, 128)
    assert any(line.startswith("pass 1/2 sampling ") for line in seen), seen
    assert "pass 2/2 sampling 3/3" in seen, seen
    meta = assets.zmm_metadata(job.output_file(settings.assets_dir))
    assert meta["upscale"] == {"factor": 2.0, "denoise": 0.4, "method": "nearest-exact",
                               "model": None, "image_method": "lanczos"}


def test_a_configured_upscale_model_is_used_and_checked(home, comfy):
    settings = settings_for(home, comfy)
    settings.override("upscale.model", "4x-UltraSharp.pth")
    with pytest.raises(NotFound) as caught:
        enqueue(settings, upscale="2")
    assert caught.value.message.startswith("upscale model '4x-UltraSharp.pth' is on no backend")
    comfy.upscale_models = ["4x-UltraSharp.pth"]
    (job_id,) = enqueue(settings, upscale="1.5")
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "succeeded" and (job.width, job.height) == (96, 96)
    assert "ImageUpscaleWithModel" in classes(graph_of(comfy))


def test_cleanup_removes_an_init_image_only_with_its_last_job(home, comfy, photo):
    settings = settings_for(home, comfy)
    first, second = enqueue(settings, init_image=str(photo), count="2")
    with Store(settings.spool_path) as store:
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        drive(worker, lambda: {store.get(i).status for i in (first, second)} == {"succeeded"})
    copy = settings.assets_dir / "inputs" / f"{assets_sha(settings)}.png"
    with Store(settings.spool_path) as store:
        store.pin(second, True)
    criteria = Criteria(older_than_s=0.0)
    report = cleanup.run(settings, criteria, dry_run=False, wait=False, confirm=None,
                         notify=lambda _: None)
    assert [item.job_id for item in report.removed] == [first]
    assert copy.exists()  # the pinned job still needs it
    with Store(settings.spool_path) as store:
        store.pin(second, False)
    report = cleanup.run(settings, criteria, dry_run=False, wait=False, confirm=None,
                         notify=lambda _: None)
    assert f"inputs/{copy.name}" in report.removed[0].files
    assert not copy.exists()
    orphans = cleanup.run(settings, Criteria(older_than_s=None, orphans=True), dry_run=True,
                          wait=False, confirm=None, notify=lambda _: None)
    assert json.dumps(orphans.public(settings.assets_dir)).count("inputs/") == 0
