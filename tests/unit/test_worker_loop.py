"""The worker loop driven in memory: run_once() with an injected clock and sleep,
a real spool, and the fake ComfyUI on 127.0.0.1 (the only thing replaced is
the server). What crosses processes (locks, signals, kill -9) is tested with
real `zmm` subprocesses in tests/integration."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.clocks import FakeClock
from tests.workers import make_worker
from zmm import intake
from zmm.backends.comfy import ComfyClient
from zmm.store import Store


class Recorder:
    """An observer that keeps what the worker told it."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str]] = []
        self.notices: list[str] = []
        self.waits: list[float] = []

    def waiting(self, url, reason, retry_in):
        self.waits.append(retry_in)

    def connected(self, url):
        pass

    def job_changed(self, inflight):
        self.phases.append((inflight.job.id, inflight.phase))

    def job_finished(self, job):
        self.finished.append((job.id, job.status))

    def notice(self, text):
        self.notices.append(text)


class Loop:
    """A Worker on a FakeClock: the clock moves poll_s per iteration and on every sleep."""

    def __init__(self, settings, comfy, **kwargs) -> None:
        settings.override("comfyui.url", comfy.url)
        settings.override("worker.poll_s", 0.02)
        settings.override("comfyui.retry_max_s", 8.0)
        self.settings, self.comfy = settings, comfy
        self.clock = FakeClock()
        self.store = Store(settings.spool_path, clock=self.clock)
        self.observer = Recorder()
        self.deepest = 0  # the most zmm prompts ComfyUI held at once
        self.worker = make_worker(self.store, ComfyClient(comfy.url, timeout=5), settings,
                             observer=self.observer, monotonic=self.clock,
                             sleep=self.clock.sleep, **kwargs)

    def enqueue(self, count: int = 1, **fields) -> list[str]:
        raw = {"prompt": "loop test", "size": "64x64", "steps": "3", "count": count, **fields}
        return [job.id for job in self.store.enqueue(intake.build(raw, self.settings))]

    def drive(self, until, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "condition not reached while driving the worker"
            self.worker.run_once()
            self.clock.advance(self.worker.poll_s)
            running, pending = self.comfy.queue_ids()
            self.deepest = max(self.deepest, len(running) + len(pending))

    def status(self, job_id: str) -> str:
        return self.store.get(job_id).status

    def close(self) -> None:
        self.worker.client.close()
        self.store.close()


@pytest.fixture
def loop(settings, comfy):
    made: list[Loop] = []

    def make(**kwargs) -> Loop:
        made.append(Loop(settings, comfy, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_claim_submit_progress_success_with_its_file(loop, comfy):
    w = loop()
    (job_id,) = w.enqueue(steps="4")
    w.drive(lambda: w.status(job_id) == "succeeded")
    job = w.store.get(job_id)
    assert (job.progress_value, job.progress_max) == (4, 4) and job.attempts == 0
    assert (w.settings.assets_dir / job.output_path).read_bytes()[:4] == b"\x89PNG"
    phases = [phase for seen, phase in w.observer.phases if seen == job_id]
    assert phases[0] == "submitted" and "sampling" in phases
    assert w.observer.finished == [(job_id, "succeeded")]
    assert [e["kind"] for e in w.store.events(job_id)] == [
        "enqueued", "claimed", "submitted", "succeeded"]
    assert [s["prompt_id"] for s in comfy.submissions] == [job_id]
    assert w.worker.counts.succeeded == 1 and w.worker.counts.other == 0 and w.worker.inflight == []


def test_one_job_submitted_ahead_never_more_than_two(loop, comfy):
    comfy.step_time = 0.01
    w = loop()
    ids = w.enqueue(count=5, steps="5")
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, len(w.worker.inflight))
        return all(w.status(i) == "succeeded" for i in ids)

    w.drive(all_done, timeout=40)
    assert most == 2 and w.deepest == 2
    assert [run["prompt_id"] for run in comfy.runs] == ids  # in queue order, once each


def test_cancel_of_the_pending_job_deletes_it_from_comfyuis_queue(loop, comfy):
    comfy.step_time = 0.05
    w = loop()
    first, second = w.enqueue(count=2, steps="20")
    w.drive(lambda: len(w.worker.inflight) == 2 and w.store.get(first).phase == "sampling")
    w.store.cancel([second])
    w.drive(lambda: w.status(second) == "cancelled")
    assert comfy.queue_ids()[1] == [] and comfy.interrupts == []  # deleted, not interrupted
    w.drive(lambda: w.status(first) == "succeeded", timeout=30)
    assert [run["prompt_id"] for run in comfy.runs] == [first]


def test_stop_drain_finishes_the_running_job_and_requeues_the_one_ahead(loop, comfy):
    comfy.step_time = 0.03
    w = loop()
    first, second = w.enqueue(count=2, steps="10")
    w.drive(lambda: len(w.worker.inflight) == 2 and w.store.get(first).phase == "sampling")
    w.worker.request_stop("drain")
    w.drive(lambda: w.worker.done, timeout=30)
    assert w.status(first) == "succeeded"
    ahead = w.store.get(second)
    assert ahead.status == "queued" and ahead.attempts == 0
    assert comfy.queue_ids() == ([], []) and comfy.interrupts == []


def test_stop_now_interrupts_the_running_job_and_requeues_both(loop, comfy):
    comfy.step_time = 0.05
    w = loop()
    first, second = w.enqueue(count=2, steps="40")
    w.drive(lambda: len(w.worker.inflight) == 2 and w.store.get(first).phase == "sampling")
    w.worker.request_stop("now")
    w.drive(lambda: w.worker.done, timeout=30)
    jobs = w.store.get_many([first, second])
    assert [(job.status, job.attempts) for job in jobs] == [("queued", 0), ("queued", 0)]
    assert comfy.interrupts and comfy.runs[0]["status"] == "interrupted"
    assert "interrupted (signal)" in jobs[0].phase_detail
    assert [run["prompt_id"] for run in comfy.runs] == [first]  # the second never started


def test_silence_on_an_injected_clock_interrupts_then_requeues(loop, comfy, settings):
    settings.override("comfyui.silence_timeout_s", 5.0)
    comfy.step_time = 0.02
    w = loop()
    (job_id,) = w.enqueue(steps="50")
    w.drive(lambda: w.store.get(job_id).phase == "sampling")
    comfy.hang(True)
    w.drive(lambda: comfy.interrupts)  # 5 s of fake time without an event
    assert w.status(job_id) == "running"
    comfy.hang(False)
    w.drive(lambda: w.status(job_id) == "queued")
    job = w.store.get(job_id)
    assert job.attempts == 1 and job.not_before is not None
    assert any("no word from ComfyUI for 5s" in text for text in w.observer.notices)


def test_comfyui_down_jobs_wait_with_attempts_unchanged_and_backoff_doubles(loop, comfy):
    w = loop()
    ids = w.enqueue(count=2)
    comfy.stop()
    for _ in range(5):
        w.worker.run_once()
    assert w.observer.waits == [1.0, 2.0, 4.0, 8.0, 8.0]  # capped at comfyui.retry_max_s
    assert w.clock.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [(job.status, job.attempts) for job in w.store.get_many(ids)] == [("queued", 0)] * 2
    comfy.start()
    w.drive(lambda: all(w.status(i) == "succeeded" for i in ids))
    assert [job.attempts for job in w.store.get_many(ids)] == [0, 0]


def test_a_prompt_finished_while_disconnected_is_read_from_history(loop, comfy):
    comfy.step_time = 0.05
    w = loop()
    (job_id,) = w.enqueue(steps="6")
    w.drive(lambda: w.store.get(job_id).phase == "sampling")
    comfy.drop_websockets()
    w.drive(lambda: w.worker.stream is None)  # the worker saw the drop
    w.drive(lambda: job_id in comfy.history_ids() or w.status(job_id) != "running")
    assert not w.worker.inflight or not w.worker.inflight[0].attached
    w.drive(lambda: w.status(job_id) == "succeeded")
    assert len(comfy.submissions) == 1 and w.store.get(job_id).attempts == 0
    assert any("lost the connection" in text for text in w.observer.notices)


def test_other_zmm_prompts_on_comfyui_count_against_the_one_ahead_rule(loop, comfy):
    """Prompts under a zmm job id this worker does not know (a dead worker's, another
    spool's) keep it from submitting until they leave ComfyUI's queue."""
    comfy.step_time = 0.05
    w = loop()
    stranger = Loop(w.settings, comfy)  # stands for a worker that died: never driven again
    theirs = stranger.enqueue(count=2, steps="10")
    stranger.drive(lambda: len(comfy.submissions) == 2)  # one running, one ahead
    (mine,) = w.enqueue()
    w.drive(lambda: w.worker.stream is not None)
    assert w.worker.foreign == set(theirs)
    w.drive(lambda: len(comfy.submissions) == 3, timeout=30)
    assert comfy.history_ids() == theirs[:1]  # submitted once the first had left the queue
    w.drive(lambda: w.status(mine) == "succeeded")
    assert w.deepest == 2 and w.worker.foreign == set()
    stranger.close()


def test_holding_the_lock_it_adopts_a_dead_workers_jobs_before_claiming(loop, comfy):
    comfy.step_time = 0.05
    dead = loop()
    first, second = dead.enqueue(count=2, steps="10")
    dead.drive(lambda: len(comfy.submissions) == 2)  # one running, one ahead; then it "dies"
    (new,) = dead.enqueue()
    heir = loop(holds_lock=True)
    started = time.perf_counter()
    heir.worker.adopt_orphans()
    took = time.perf_counter() - started
    assert [i.job.id for i in heir.worker.inflight] == [first, second]
    assert {job.worker_id for job in heir.store.get_many([first, second])} == {heir.worker.id}
    assert took < 0.5, f"adopting two jobs took {took:.3f}s"
    assert dead.worker.id not in {row["id"] for row in heir.store.live_workers(lease_s=3600.0)}
    heir.drive(lambda: all(heir.status(i) == "succeeded" for i in (first, second, new)),
               timeout=30)
    assert [s["prompt_id"] for s in comfy.submissions] == [first, second, new]
    assert heir.deepest == 2
    events = [e["kind"] for e in heir.store.events(first)]
    assert events[-2:] == ["adopted", "succeeded"]


def test_without_the_lock_it_leaves_running_jobs_to_their_lease(loop, comfy):
    comfy.step_time = 0.05
    other = loop()
    (job_id,) = other.enqueue(steps="10")
    other.drive(lambda: len(comfy.submissions) == 1)
    stranger = loop()  # holds_lock=False: the owner may be alive on a shared spool
    stranger.worker.adopt_orphans()
    assert stranger.worker.inflight == [] and other.store.get(job_id).worker_id == other.worker.id


def test_a_job_taken_over_meanwhile_is_dropped_with_a_notice_not_a_crash(loop, comfy):
    """Its lease ran out and another worker adopted it: when ComfyUI then finishes
    it here, this worker drops the result, says so and carries on."""
    comfy.step_time = 0.02
    w = loop()
    (job_id,) = w.enqueue(steps="10")
    w.drive(lambda: w.store.get(job_id).phase == "sampling")
    heir = "elsewhere:1:beef"
    assert w.store.adopt(job_id, heir, lease_s=60, owner=w.worker.id,
                         reason="lease expired") is not None
    w.drive(lambda: not w.worker.inflight)
    job = w.store.get(job_id)
    assert (job.status, job.worker_id) == ("running", heir)
    assert any(job_id in text and "taken over" in text for text in w.observer.notices)
    assert w.worker.counts.total == 0
    (later,) = w.enqueue()
    w.drive(lambda: w.status(later) == "succeeded")


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="the full disk fake needs /proc")
def test_a_full_disk_keeps_jobs_running_and_claims_nothing_until_there_is_room(
        loop, comfy, monkeypatch):
    from tests.fakes.disk import FullDisk
    from zmm.worker.loop import DISK_RETRY_S

    w = loop()
    first, second, third = w.enqueue(count=3)
    disk = FullDisk(w.settings.assets_dir, monkeypatch)
    w.drive(lambda: len(comfy.history_ids()) == 2)  # the running one and the one ahead
    w.drive(lambda: disk.refused or w.status(first) != "running")
    for _ in range(30):  # well under DISK_RETRY_S of fake time
        w.worker.run_once()
        w.clock.advance(w.worker.poll_s)
    assert disk.refused and any("the disk is full" in text for text in w.observer.notices)
    assert [w.status(i) for i in (first, second, third)] == ["running", "running", "queued"]
    assert len(comfy.submissions) == 2  # nothing claimed while images cannot be saved
    assert not list(w.settings.assets_dir.rglob("*.png"))
    disk.free()
    w.clock.advance(DISK_RETRY_S)
    w.drive(lambda: all(w.status(i) == "succeeded" for i in (first, second, third)))
    assert [job.attempts for job in w.store.get_many([first, second, third])] == [0, 0, 0]
    assert len(comfy.submissions) == 3
