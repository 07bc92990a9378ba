"""Two workers, each on its own fake ComfyUI with a different model list, one
spool: a job is only ever sent to a server that has its files; a server that
turns out to lack a file (zmm's pre-check, or ComfyUI's 400) puts the job back
without using an attempt and refreshes its list; and the file lists are kept
in the spool (on connect and on a timer). Driven in memory with run_once()."""

from __future__ import annotations

import json
import time

import pytest

from tests.clocks import FakeClock
from tests.fakes.comfyui import FakeComfyUI
from tests.workers import make_worker
from zmm import intake
from zmm.backends.comfy import ComfyClient
from zmm.config import fleet
from zmm.store import Store
from zmm.worker.loop import Worker

SDXL = "sd_xl_base_1.0.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"


class Notes:
    def __init__(self) -> None:
        self.notices: list[str] = []

    def waiting(self, url, reason, retry_in):
        pass

    def connected(self, url):
        pass

    def job_changed(self, inflight):
        pass

    def job_finished(self, job):
        pass

    def notice(self, text):
        self.notices.append(text)


class Fleet:
    """gpu0 on a fake with SDXL only, gpu1 on a fake with SD1.5 only."""

    def __init__(self, settings, fakes: dict[str, FakeComfyUI]) -> None:
        settings.override("worker.poll_s", 0.02)
        settings.backend_entries = [{"name": name, "url": fake.url, "gpu": index}
                                    for index, (name, fake) in enumerate(fakes.items())]
        self.settings, self.fakes = settings, fakes
        self.clock = FakeClock()
        self.store = Store(settings.spool_path, clock=self.clock)
        self.workers: dict[str, Worker] = {}
        self.notes: dict[str, Notes] = {}
        for name, fake in fakes.items():
            view = fleet.settings_for(settings, fleet.backend(settings, name))
            self.notes[name] = Notes()
            self.workers[name] = make_worker(
                Store(settings.spool_path, clock=self.clock), ComfyClient(fake.url, timeout=5),
                view, observer=self.notes[name], monotonic=self.clock, sleep=self.clock.sleep)

    def enqueue(self, count: int = 1, **fields) -> list[str]:
        raw = {"prompt": "routing", "size": "64x64", "steps": "2", "count": count, **fields}
        return [job.id for job in self.store.enqueue(intake.build(raw, self.settings))]

    def drive(self, until, names=None, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "condition not reached while driving"
            for name in names or self.workers:
                self.workers[name].run_once()
            self.clock.advance(0.02)

    def status(self, job_id: str) -> str:
        return self.store.get(job_id).status

    def recorded(self, name: str) -> list[str] | None:
        rows = {row["name"]: row for row in self.store.backends()}
        return rows[name]["files"] if name in rows else None

    def close(self) -> None:
        for worker in self.workers.values():
            worker.client.close()
            worker.store.close()
        self.store.close()


@pytest.fixture
def two(settings, tmp_path):
    fakes = {"gpu0": FakeComfyUI(checkpoints=[SDXL], output_dir=tmp_path / "a").start(),
             "gpu1": FakeComfyUI(checkpoints=[SD15], output_dir=tmp_path / "b").start()}
    made = Fleet(settings, fakes)
    try:
        yield made
    finally:
        made.close()
        for fake in fakes.values():
            fake.stop()


def submitted_checkpoints(fake: FakeComfyUI) -> set[str]:
    return {node["inputs"]["ckpt_name"] for body in fake.submissions
            for node in body["prompt"].values() if node["class_type"] == "CheckpointLoaderSimple"}


def test_each_job_runs_only_on_a_server_with_its_model(two):
    for worker in two.workers.values():
        worker.group_window = 0  # no loaded-model preference: the head of the queue each time
    ids = []
    for _ in range(3):
        ids += two.enqueue(model="sdxl") + two.enqueue(model="sd15")
    two.drive(lambda: all(two.status(job_id) == "succeeded" for job_id in ids))
    assert submitted_checkpoints(two.fakes["gpu0"]) == {SDXL}
    assert submitted_checkpoints(two.fakes["gpu1"]) == {SD15}
    assert len(two.fakes["gpu0"].submissions) == len(two.fakes["gpu1"].submissions) == 3
    for job_id in ids:
        job = two.store.get(job_id)
        wanted = "gpu0" if job.model_requested == SDXL else "gpu1"
        assert job.comfy_url == two.fakes[wanted].url and job.attempts == 0
        kinds = [event["kind"] for event in two.store.events(job_id)]
        assert kinds.count("claimed") == 1 and "requeued" not in kinds  # claimed right at once
    assert f"checkpoints/{SDXL}" in two.recorded("gpu0")
    assert f"checkpoints/{SD15}" not in two.recorded("gpu0")


def test_a_job_no_server_has_the_model_for_stays_queued_and_untouched(two):
    (job_id,) = two.enqueue(model="nope.safetensors", family="sdxl")
    (other,) = two.enqueue(model="sdxl")
    two.drive(lambda: two.status(other) == "succeeded")
    for _ in range(20):
        for worker in two.workers.values():
            worker.run_once()
    job = two.store.get(job_id)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
    assert not any("nope" in json.dumps(body) for fake in two.fakes.values()
                   for body in fake.submissions)


def test_a_file_gone_from_the_server_requeues_without_an_attempt(two):
    gpu0, gpu1 = two.fakes["gpu0"], two.fakes["gpu1"]
    two.drive(lambda: two.recorded("gpu0") is not None, names=["gpu0"])
    gpu0.set_checkpoints([])  # after gpu0 read its list: the spool still says it has SDXL
    gpu1.set_checkpoints([SD15, SDXL])
    (job_id,) = two.enqueue(model="sdxl")
    two.drive(lambda: two.store.get(job_id).attempts == 0
              and any(e["kind"] == "requeued" for e in two.store.events(job_id)), names=["gpu0"])
    job = two.store.get(job_id)
    assert job.status == "queued" and job.attempts == 0 and gpu0.submissions == []
    (requeued,) = [e for e in two.store.events(job_id) if e["kind"] == "requeued"]
    assert "backend gpu0 has no checkpoint 'sd_xl_base_1.0.safetensors'" in requeued["message"]
    assert "no attempt used" in requeued["message"]
    assert f"checkpoints/{SDXL}" not in two.recorded("gpu0")  # refreshed
    for _ in range(10):  # gpu0 does not take it again
        two.workers["gpu0"].run_once()
    assert two.status(job_id) == "queued"
    two.drive(lambda: two.status(job_id) == "succeeded")
    assert two.store.get(job_id).comfy_url == gpu1.url and gpu0.submissions == []


def test_comfyuis_400_for_a_missing_file_requeues_too(two):
    gpu0, gpu1 = two.fakes["gpu0"], two.fakes["gpu1"]
    (first,) = two.enqueue(model="sdxl")
    two.drive(lambda: two.status(first) == "succeeded", names=["gpu0"])
    gpu0.set_checkpoints([])  # zmm checked this graph's files once: ComfyUI says it now
    gpu1.set_checkpoints([SDXL])
    (job_id,) = two.enqueue(model="sdxl")
    two.drive(lambda: any(e["kind"] == "requeued" for e in two.store.events(job_id)),
              names=["gpu0"])
    job = two.store.get(job_id)
    assert job.status == "queued" and job.attempts == 0
    assert len(gpu0.submissions) == 2  # the second one was refused with value_not_in_list
    assert f"checkpoints/{SDXL}" not in two.recorded("gpu0")
    two.drive(lambda: two.status(job_id) == "succeeded")
    assert two.store.get(job_id).comfy_url == gpu1.url


def test_a_node_class_no_server_has_keeps_the_job_queued(two, tmp_path):
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL}},
             "2": {"class_type": "NoSuchNode", "inputs": {"model": ["1", 0]}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                         "filename_prefix": "$filename_prefix"}}}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(graph))
    (job_id,) = two.enqueue(workflow=str(path), size=None)
    assert "nodes/NoSuchNode" in json.loads(two.store.get(job_id).needs or "[]")
    for name in ("gpu0", "gpu1"):
        two.workers[name]._fill()  # its server's node classes are its route: no claim
    assert two.status(job_id) == "queued" and two.workers["gpu0"].inflight == []


def test_a_worker_that_does_not_know_its_files_claims_nothing(two):
    worker = two.workers["gpu0"]
    (job_id,) = two.enqueue(model="sdxl")
    worker.capability.forget()
    worker._fill()
    assert two.status(job_id) == "queued" and worker.inflight == []


def test_the_file_list_is_read_again_on_the_timer(two):
    two.settings.override("worker.files_refresh_s", 60.0)
    worker = two.workers["gpu0"]
    two.drive(lambda: two.recorded("gpu0") is not None, names=["gpu0"])
    two.fakes["gpu0"].loras = ["fresh.safetensors"]
    two.clock.advance(30)
    for _ in range(3):
        worker.run_once()
    assert "loras/fresh.safetensors" not in two.recorded("gpu0")
    two.clock.advance(31)
    for _ in range(3):
        worker.run_once()
    assert "loras/fresh.safetensors" in two.recorded("gpu0")
