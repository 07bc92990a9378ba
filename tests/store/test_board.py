"""What `zmm top` shows: the frame model (zmm.views.dashboard) built from one read of a
real spool (zmm.store.board) at a test clock's time, panel by panel, and the
reads' plans (every query answered from an index, none reading all of `jobs`)."""

from __future__ import annotations

import pytest

from tests.store.test_status_indexes import full_scans
from zmm import intake
from zmm.config.fleet import Backend
from zmm.jobs import JobState
from zmm.store import board
from zmm.store.backends import BackendReport
from zmm.views import dashboard

GIB = 1024**3
GPU0, GPU1, BOX = "http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://box.lan:8188"


def enqueue(spool, settings, prompt="a lighthouse", **fields):
    return spool.enqueue(intake.build(dict(prompt=prompt, **fields), settings))[0]


def finish(spool, settings, status: str, *, error: str | None = None,
           seconds: float | None = None):
    job = enqueue(spool, settings, f"a {status} job")
    spool.claim("w-done", lease_s=60, aging_s=600, only_ids=[job.id])
    fields = {"generation_time_s": seconds} if seconds is not None else {}
    return spool.transition(job.id, JobState(status), expect=JobState.RUNNING,
                            error_message=error, **fields)


def run(spool, settings, worker: str, url: str | None, priority: str = "MEDIUM", **progress):
    job = enqueue(spool, settings, f"running on {worker}\nsecond line", priority=priority)
    spool.claim(worker, lease_s=60, aging_s=600, only_ids=[job.id])
    spool.update(job.id, worker_id=worker, comfy_url=url, **progress)
    return job


@pytest.fixture
def prepared(spool, settings, clock):
    """A spool two hours into its life; returns the ids the panels should show."""
    start = clock.now
    old_failure = finish(spool, settings, "failed", error="old failure")  # outside the hour
    spool.register_worker("w3", "http://127.0.0.1:8003", "idle", backend="gpu3")  # dies: no heartbeat since
    clock.advance(7200 - 3000)  # frame time T = start + 7200; now T - 3000
    ok_a = finish(spool, settings, "succeeded", seconds=10.0)
    ok_b = finish(spool, settings, "succeeded", seconds=20.0)
    clock.advance(1000)  # T - 2000
    bad_graph = finish(spool, settings, "failed", error="ComfyUI rejected the graph")
    low = enqueue(spool, settings, "low one", priority="LOW")
    clock.advance(1500)  # T - 500
    medium = enqueue(spool, settings, "medium one", priority="MEDIUM")
    high = [enqueue(spool, settings, f"high {n}", priority="HIGH") for n in range(2)]
    clock.advance(400)  # T - 100
    ok_c = finish(spool, settings, "succeeded", seconds=30.0)
    oom = finish(spool, settings, "failed", error="CUDA out of memory\nTraceback (most recent)")
    clock.advance(50)  # T - 50
    finish(spool, settings, "cancelled")
    sampling = run(spool, settings, "w0", GPU0, phase="sampling", progress_value=5,
                   progress_max=20)
    loading = run(spool, settings, "w2", BOX, priority="HIGH", phase="loading")
    spool.cancel([loading.id])
    critical = enqueue(spool, settings, "critical one\nwith details", priority="CRITICAL")
    clock.advance(50)  # T
    for worker, url, name in (("w0", GPU0, "gpu0"), ("w1", GPU1, "gpu1"), ("w2", BOX, "box")):
        spool.register_worker(worker, url, "busy", backend=name)  # the name is the key
    spool.report_backend(BackendReport("gpu0", GPU0, 0, "w0", "up", loaded_model="sdxl.safetensors",
                                       vram_total_bytes=24 * GIB, vram_free_bytes=6 * GIB))
    spool.report_backend(BackendReport("gpu1", GPU1, 1, "w1", "down",
                                       last_error="connection refused\nat 127.0.0.1:8002"))
    spool.report_backend(BackendReport("box", BOX, None, "w2", "up", managed=True, restarts=2))
    spool.set_draining("box", BOX, True)
    spool.report_backend(BackendReport("gpu3", "http://127.0.0.1:8003", 3, "w3", "up"))
    assert clock.now == start + 7200
    return {"old_failure": old_failure.id, "ok": [ok_a.id, ok_b.id, ok_c.id],
            "bad_graph": bad_graph.id, "oom": oom.id, "sampling": sampling.id,
            # The LOW job has waited 2000 s: aging (600 s a class) has made it HIGH, and
            # it was queued before the HIGH ones.
            "loading": loading.id, "head": [critical.id, low.id, high[0].id, high[1].id,
                                            medium.id]}


def frame_of(spool, settings, configured=(), head: int = 10) -> dashboard.Frame:
    snapshot = spool.board(aging_s=settings.get("worker.aging_s"),
                           lease_s=settings.get("worker.lease_s"), head=head)
    return dashboard.build(snapshot, now=spool.clock(), spool="spool.db",
                           configured=list(configured), lease_s=settings.get("worker.lease_s"))


def test_backends_panel_shows_state_memory_model_and_jobs(spool, settings, prepared):
    frame = frame_of(spool, settings, configured=[Backend("spare", "http://127.0.0.1:8009", 4)])
    lines = {line.name: line for line in frame.backends}
    assert [line.name for line in frame.backends] == ["box", "gpu0", "gpu1", "gpu3", "spare"]
    gpu0 = lines["gpu0"]
    assert (gpu0.state, gpu0.gpu, gpu0.loaded_model, gpu0.running) == ("up", 0,
                                                                        "sdxl.safetensors", 1)
    assert gpu0.vram_used_fraction == pytest.approx(0.75)
    assert (lines["gpu1"].state, lines["gpu1"].last_error) == ("down", "connection refused")
    assert lines["gpu1"].vram_used_fraction is None  # nothing reported: no bar
    box = lines["box"]
    assert (box.state, box.gpu, box.managed, box.restarts, box.running) == ("draining", None,
                                                                            True, 2, 1)
    assert lines["gpu3"].state == dashboard.NO_WORKER  # its worker stopped beating
    assert (lines["spare"].state, lines["spare"].running) == (dashboard.NO_WORKER, 0)
    assert frame.workers == 3


def test_running_panel_shows_phase_steps_elapsed_and_backend(spool, settings, prepared):
    frame = frame_of(spool, settings)
    by_id = {job.id: job for job in frame.running}
    assert set(by_id) == {prepared["sampling"], prepared["loading"]}
    sampling = by_id[prepared["sampling"]]
    assert (sampling.phase, sampling.step, sampling.steps, sampling.where) == ("sampling", 5, 20,
                                                                                "gpu0")
    assert sampling.elapsed_s == pytest.approx(50)
    assert sampling.prompt == "running on w0" and not sampling.cancelling
    loading = by_id[prepared["loading"]]
    assert (loading.phase, loading.steps, loading.where, loading.cancelling) == (
        "loading", None, "box", True)


def test_queue_panel_is_the_claim_order_with_counts_per_priority(spool, settings, prepared):
    frame = frame_of(spool, settings)
    assert [job.id for job in frame.head] == prepared["head"]
    assert [job.id for job in spool.run_order(settings.get("worker.aging_s"))] == prepared["head"]
    assert [job.position for job in frame.head] == [1, 2, 3, 4, 5]
    critical = frame.head[0]
    assert (critical.priority, critical.prompt, critical.waited_s) == ("CRITICAL", "critical one",
                                                                       50)
    assert frame.queued == 5
    assert frame.queued_by_priority == {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 1, "LOW": 1}
    shorter = frame_of(spool, settings, head=2)
    assert [job.id for job in shorter.head] == prepared["head"][:2] and shorter.queued == 5


def test_throughput_panel_counts_the_last_hour_in_five_minute_bars(spool, settings, prepared):
    flow = frame_of(spool, settings).throughput
    assert (flow.succeeded, flow.failed, flow.cancelled) == (3, 2, 1)  # not the 2 h old one
    assert flow.median_generation_s == 20.0
    assert flow.bucket_s == 300 and len(flow.buckets) == 12
    expected = [(0, 0)] * 12
    expected[2] = (2, 0)  # T - 3000
    expected[5] = (0, 1)  # T - 2000
    expected[11] = (1, 1)  # T - 100 (the cancelled job has no bar)
    assert list(flow.buckets) == expected
    assert not flow.partial


def test_failures_panel_lists_the_latest_first_with_the_first_line(spool, settings, prepared):
    failures = frame_of(spool, settings).failures
    assert [job.id for job in failures] == [prepared["oom"], prepared["bad_graph"],
                                            prepared["old_failure"]]
    assert [job.error for job in failures] == ["CUDA out of memory",
                                               "ComfyUI rejected the graph", "old failure"]
    assert [job.ago_s for job in failures] == [100, 2000, 7200]


def test_read_uses_the_clock_and_settings_and_shows_the_default_backend(spool, settings,
                                                                        prepared, clock):
    frame = dashboard.read(spool, settings, clock=lambda: clock.now + 600)
    assert frame.at == clock.now + 600 and frame.spool == str(spool.path)
    assert "default" in [line.name for line in frame.backends]  # no [[backends]] configured
    assert frame.workers == 0  # ten minutes later every heartbeat is stale
    assert not frame.paused
    spool.set_state("paused", True)
    assert dashboard.read(spool, settings).paused


def test_an_empty_spool_makes_an_empty_frame(spool, settings):
    frame = dashboard.read(spool, settings)
    assert (frame.running, frame.head, frame.failures, frame.queued) == ((), (), (), 0)
    assert frame.throughput.succeeded == 0 and frame.throughput.median_generation_s is None
    assert [(line.name, line.state) for line in frame.backends] == [("default",
                                                                    dashboard.NO_WORKER)]


def test_the_window_holds_what_finished_in_it_and_says_when_it_hit_its_limit(
        spool, settings, clock):
    finish(spool, settings, "succeeded")  # before the window
    clock.advance(4000)
    for _ in range(7):
        finish(spool, settings, "succeeded")
    read = board.read(spool.conn, clock.now, aging_s=600, worker_since=0, head=0, failures=0,
                      window_s=3600)
    assert len(read.finished) == 7 and not read.finished_partial
    capped = board.read(spool.conn, clock.now, aging_s=600, worker_since=0, head=0, failures=0,
                        window_s=3600, limit=6)
    assert len(capped.finished) == 6 and capped.finished_partial
    assert dashboard.throughput(capped.finished, clock.now, partial=True).partial


def test_a_frame_reads_indexes_only(spool, settings, prepared):
    assert full_scans(spool.conn, lambda: frame_of(spool, settings)) == []


def test_a_frame_is_one_snapshot_and_leaves_no_transaction_open(spool, settings, prepared):
    traced: list[str] = []
    spool.conn.set_trace_callback(traced.append)
    try:
        frame_of(spool, settings)
    finally:
        spool.conn.set_trace_callback(None)
    assert traced[0] == "BEGIN" and traced[-1] == "COMMIT"
    assert not spool.conn.in_transaction


def test_a_job_queued_long_before_the_window_counts_when_it_finishes_in_it(spool, settings,
                                                                            clock):
    straggler = enqueue(spool, settings, "queued a day ago")
    for _ in range(600):  # queued after it, finished before the window
        finish(spool, settings, "failed")
    clock.advance(86_400)
    for _ in range(3):
        finish(spool, settings, "succeeded")
    spool.claim("w-done", lease_s=60, aging_s=600, only_ids=[straggler.id])
    spool.transition(straggler.id, JobState.FAILED, expect=JobState.RUNNING, error_message="x")
    read = board.read(spool.conn, clock.now, aging_s=600, worker_since=0, head=0, failures=0,
                      window_s=3600)
    assert sorted(status for status, _at, _s in read.finished) == ["failed"] + ["succeeded"] * 3
