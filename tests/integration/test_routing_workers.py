"""Two real `zmm serve-worker` processes on two fake ComfyUI servers with
different models, one spool: every job runs once, on a server that has its
model, and none is lost; a job pinned with --on runs where it is pinned."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import run_zmm, wait_until, zmm_process
from tests.fakes.comfyui import FakeComfyUI
from zmm.store import Store

SDXL = "sd_xl_base_1.0.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture
def fakes(tmp_path):
    made = {"gpu0": FakeComfyUI(checkpoints=[SDXL], step_time=0.01,
                                output_dir=tmp_path / "a").start(),
            "gpu1": FakeComfyUI(checkpoints=[SD15, SDXL], step_time=0.01,
                                output_dir=tmp_path / "b").start()}
    try:
        yield made
    finally:
        for fake in made.values():
            fake.stop()


def checkpoints_of(fake: FakeComfyUI) -> list[str]:
    return [node["inputs"]["ckpt_name"] for body in fake.submissions
            for node in body["prompt"].values() if node["class_type"] == "CheckpointLoaderSimple"]


@pytest.mark.slow
def test_two_workers_on_two_servers_run_each_job_where_its_model_is(home, settings, fakes,
                                                                    tmp_path, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("".join(
        f'[[backends]]\nname = "{name}"\nurl = "{fake.url}"\ngpu = {index}\n\n'
        for index, (name, fake) in enumerate(fakes.items())))
    monkeypatch.setenv("ZMM_WORKER_POLL_S", "0.05")
    requests = tmp_path / "jobs.jsonl"
    lines = [{"prompt": f"job {n}", "model": "sd15" if n % 2 else "sdxl"} for n in range(12)]
    lines.append({"prompt": "pinned", "model": "sdxl", "on": "gpu1"})
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    queued = run_zmm("generate", "--from", str(requests), "--size", "64x64", "--steps", "2",
                     "--no-wait")
    assert queued.returncode == 0, queued.stderr
    ids = queued.stdout.split()
    workers = [zmm_process("serve-worker", "--backend", name, "--no-progress") for name in fakes]
    try:
        def finished() -> bool:
            with Store(settings.spool_path) as store:
                return all(job.finished for job in store.get_many(ids))
        wait_until(finished, timeout=90, message="the jobs did not all finish")
    finally:
        for process in workers:
            process.send_signal(signal.SIGINT)
        for process in workers:
            process.communicate(timeout=30)
    with Store(settings.spool_path) as store:
        jobs = store.get_many(ids)
        events = {job.id: [event["kind"] for event in store.events(job.id)] for job in jobs}
    assert [job.status for job in jobs] == ["succeeded"] * 13
    assert all(job.attempts == 0 and events[job.id].count("claimed") == 1 for job in jobs)
    assert set(checkpoints_of(fakes["gpu0"])) <= {SDXL}  # never sent a job for SD1.5
    submitted = [body["prompt_id"] for fake in fakes.values() for body in fake.submissions]
    assert sorted(submitted) == sorted(ids)  # each job once, none lost
    by_id = {job.id: job for job in jobs}
    for job_id in ids[1::2][:6]:  # the SD1.5 jobs
        assert by_id[job_id].comfy_url == fakes["gpu1"].url
    assert by_id[ids[-1]].comfy_url == fakes["gpu1"].url and by_id[ids[-1]].on_backend == "gpu1"
