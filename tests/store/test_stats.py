"""`zmm stats` metrics on a real spool: nearest-rank percentiles, success rates,
the time window, event counts, images per week and the seed's targets."""

from __future__ import annotations

import pytest

from zmm import intake
from zmm.jobs import JobState
from zmm.store import Store, stats

DAY = 86400.0
SDXL = "sd_xl_base_1.0.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture
def make(spool, settings):
    """A job taken to `status` as a worker would, with the result fields given."""

    def make_job(status: str = "succeeded", *, backend: str | None = "local", model: str = SDXL,
                 seconds: float | None = None, cost: float | None = None):
        job = spool.enqueue(intake.build({"prompt": "a lighthouse"}, settings))[0]
        if status == "queued":
            return job
        if status == "cancelled" and backend is None:  # cancelled before it ever ran
            return spool.transition(job.id, JobState.CANCELLED, expect=JobState.QUEUED)
        results = {key: value for key, value in {"backend": backend, "model_used": model,
                                                 "generation_time_s": seconds,
                                                 "cost_usd": cost}.items() if value is not None}
        job = spool.transition(job.id, JobState.RUNNING, expect=JobState.QUEUED, **results)
        if status == "running":
            return job
        return spool.transition(job.id, JobState(status), expect=JobState.RUNNING)

    return make_job


def report(spool, since_s: float | None = 30 * DAY):
    now = spool.clock()
    return stats.report(spool.conn, None if since_s is None else now - since_s, now).public()


def test_percentiles_are_nearest_rank_per_model_and_overall(spool, make):
    sdxl = [12.5, 48.0, 33.3, 5.0, 61.2, 22.1, 40.4, 18.8, 27.6, 55.9,
            9.9, 36.7, 44.4, 15.2, 30.0, 70.5, 25.3, 38.1, 51.7, 20.6]
    for seconds in sdxl:
        make(seconds=seconds)
    for seconds in (4.0, 8.0, 6.0):
        make(model=SD15, seconds=seconds)
    make("failed", seconds=999.0)  # only succeeded jobs have a generation time that counts
    make("succeeded")  # succeeded without a recorded time: no time to count
    data = report(spool)
    # sdxl sorted: 5.0 9.9 12.5 15.2 18.8 20.6 22.1 25.3 27.6 30.0 | 33.3 ... 61.2 70.5
    # median = rank ceil(0.5 * 20) = 10 -> 30.0; p95 = rank ceil(0.95 * 20) = 19 -> 61.2
    assert data["generation_time_s"][SDXL] == {"count": 20, "median_s": 30.0, "p95_s": 61.2,
                                               "max_s": 70.5}
    # sd15 sorted: 4.0 6.0 8.0: median rank 2 -> 6.0; p95 rank ceil(2.85) = 3 -> 8.0
    assert data["generation_time_s"][SD15] == {"count": 3, "median_s": 6.0, "p95_s": 8.0, "max_s": 8.0}
    # all 23: 4.0 5.0 6.0 8.0 9.9 12.5 15.2 18.8 20.6 22.1 25.3 27.6 ...: rank 12 -> 27.6
    assert data["targets"]["median_generation_s"] == {"target": 60, "value": 27.6, "met": True}


def test_a_model_run_on_two_backends_gets_one_set_of_percentiles(spool, make):
    for seconds in (1.0, 2.0, 3.0):
        make(model="shared", seconds=seconds)
    for seconds in (10.0, 20.0):
        make(backend="stability", model="shared", seconds=seconds, cost=0.04)
    # 1 2 3 10 20: median rank 3 -> 3.0; p95 rank 5 -> 20.0
    assert report(spool)["generation_time_s"] == {
        "shared": {"count": 5, "median_s": 3.0, "p95_s": 20.0, "max_s": 20.0}}


def test_success_rates_exclude_cancelled_and_count_cloud_rescues_against_local(spool, make):
    for _ in range(8):
        make(seconds=20.0)
    make(backend="stability", model="sdxl-1.0", seconds=6.0, cost=0.04)
    make("failed")
    make("cancelled", backend=None)
    make("cancelled")  # cancelled while running locally
    make("queued")
    make("running")
    data = report(spool)
    assert data["jobs"] == {"total": 14, "by_status": {
        "queued": 1, "running": 1, "succeeded": 9, "failed": 1, "cancelled": 2}}
    assert data["success_rate"] == 0.9  # 9 of 10 finished
    assert data["local_success_rate"] == 0.8  # 8 of 10: the cloud job needed rescuing
    assert data["by_backend"]["local"] == {"queued": 0, "running": 1, "succeeded": 8,
                                           "failed": 1, "cancelled": 1, "cost_usd": 0.0}
    assert data["by_backend"]["stability"] == {"queued": 0, "running": 0, "succeeded": 1,
                                               "failed": 0, "cancelled": 0, "cost_usd": 0.04}
    assert data["by_backend"]["none"]["cancelled"] == 1
    assert data["by_backend"]["none"]["queued"] == 1
    assert data["cost_usd"] == {"total": 0.04, "cloud_jobs": 1}
    assert data["targets"]["local_success_rate"] == {"target": 0.95, "value": 0.8, "met": False}


def test_window_includes_its_first_instant_and_nothing_before(spool, make, clock):
    start = clock.now
    make(seconds=10.0)  # one second before the window below
    clock.now = start + 1
    boundary = make(seconds=20.0)  # at its very start
    clock.now = start + 3600
    make("failed")
    clock.now = start + 1 + 7 * DAY
    data = report(spool, 7 * DAY)
    assert data["since"] == boundary.created_at
    assert data["jobs"]["total"] == 2
    assert data["generation_time_s"][SDXL]["count"] == 1
    assert data["success_rate"] == 0.5
    everything = report(spool, None)
    assert everything["since"] is None and everything["jobs"]["total"] == 3


def test_window_follows_created_at_even_when_the_clock_went_back(spool, make, clock):
    start = clock.now
    for _ in range(6):
        make(seconds=1.0)
    clock.now = start + 29 * DAY
    make(seconds=2.0)
    clock.now = start + 28 * DAY  # the clock stepped back a day: a later job, created earlier
    make(seconds=3.0)
    make("failed")
    clock.now = start + 30 * DAY
    data = report(spool, 7 * DAY)
    assert data["jobs"]["total"] == 3
    assert data["generation_time_s"][SDXL] == {"count": 2, "median_s": 2.0, "p95_s": 3.0, "max_s": 3.0}


def test_window_holding_most_of_the_spool(spool, make, clock):
    make(seconds=1.0)
    clock.now += 10 * DAY
    for seconds in (2.0, 3.0, 4.0, 5.0):
        make(seconds=seconds)
    data = report(spool, 7 * DAY)
    assert data["jobs"]["total"] == 4
    assert data["generation_time_s"][SDXL] == {"count": 4, "median_s": 3.0, "p95_s": 5.0, "max_s": 5.0}


def test_a_window_after_every_job_is_empty(spool, make, clock):
    make(seconds=10.0)
    make("failed")
    clock.now += 2 * DAY
    data = report(spool, DAY)
    assert data["jobs"]["total"] == 0 and data["by_backend"] == {}
    assert data["generation_time_s"] == {} and data["success_rate"] is None
    assert data["images_per_week"] == 0.0


def test_events_count_each_swap_once_and_only_inside_the_window(spool, make, clock):
    old = make()
    spool.add_event(old.id, "swap", "need VRAM", {"unload": ["llama3:8b"]})
    spool.add_event(old.id, "downgrade", "running on SD1.5")
    clock.now += 10 * DAY
    first, second = make(), make()
    for job in (first, second):  # what the worker writes for one swap
        spool.add_event(job.id, "swap", "need VRAM", {"unload": ["llama3:8b", "qwen2:7b"]})
        spool.add_event(job.id, "swap", "unloading qwen2:7b failed: HTTP 500")
        spool.add_event(job.id, "swap", "released in 1.2s")
    spool.add_event(first.id, "swap_stuck", "Ollama did not release its memory")
    spool.add_event(first.id, "downgrade", "running on SD1.5", {"from": SDXL, "to": SD15})
    spool.add_event(second.id, "cloud_fallback", "handed to stability")
    for _ in range(3):
        spool.add_event(second.id, "vram_wait", "waiting for 12 GB")
    assert report(spool, 7 * DAY)["events"] == {"swaps": 2, "downgrades": 1,
                                                "cloud_fallbacks": 1, "vram_waits": 3}
    assert report(spool, None)["events"]["swaps"] == 3


def test_images_per_week_divides_by_the_real_length_of_the_window(spool, make, clock):
    for _ in range(10):
        make()
    clock.now += 3600
    assert report(spool, DAY)["images_per_week"] == 70.0  # 10 in one day
    assert report(spool, 14 * DAY)["images_per_week"] == 5.0  # 10 in two weeks
    clock.now += 14 * DAY - 3600
    # all: from the oldest job to now, two weeks
    assert report(spool, None)["images_per_week"] == 5.0


def test_empty_spool_reports_zeros_and_no_rates(spool):
    data = report(spool)
    assert data["jobs"] == {"total": 0, "by_status": dict.fromkeys(
        ("queued", "running", "succeeded", "failed", "cancelled"), 0)}
    assert data["by_backend"] == {} and data["generation_time_s"] == {}
    assert data["success_rate"] is None and data["local_success_rate"] is None
    assert data["cost_usd"] == {"total": 0.0, "cloud_jobs": 0}
    assert data["events"] == {"swaps": 0, "downgrades": 0, "cloud_fallbacks": 0, "vram_waits": 0}
    assert data["images_per_week"] == 0.0
    assert data["targets"] == {
        "median_generation_s": {"target": 60, "value": None, "met": None},
        "local_success_rate": {"target": 0.95, "value": None, "met": None},
        "images_per_week": {"target": 20, "value": 0.0, "met": False}}
    everything = report(spool, None)
    assert everything["images_per_week"] is None  # no oldest job to start from
    assert everything["targets"]["images_per_week"]["met"] is None


def test_targets_at_their_thresholds(spool, make, clock):
    for _ in range(19):
        make(seconds=60.0)
    make("failed")
    clock.now += 3600
    data = report(spool, 7 * DAY)  # 19 succeeded in a week
    assert data["targets"]["local_success_rate"] == {"target": 0.95, "value": 0.95, "met": False}
    assert data["targets"]["median_generation_s"] == {"target": 60, "value": 60.0, "met": False}
    assert data["targets"]["images_per_week"] == {"target": 20, "value": 19.0, "met": False}
    make(seconds=1.0)
    data = report(spool, 7 * DAY)
    assert data["targets"]["images_per_week"] == {"target": 20, "value": 20.0, "met": True}
    assert data["targets"]["local_success_rate"]["met"] is True  # 20 of 21


def test_values_are_rounded(spool, make):
    make(seconds=12.34567, backend="openai", model="gpt-image-1", cost=0.1)
    make(backend="openai", model="gpt-image-1", cost=0.2)
    make("failed", backend="openai", model="gpt-image-1", cost=0.00001)
    data = report(spool)
    assert data["generation_time_s"]["gpt-image-1"]["median_s"] == 12.346
    assert data["cost_usd"]["total"] == 0.3 and data["by_backend"]["openai"]["cost_usd"] == 0.3
    assert data["success_rate"] == 0.6667
    assert data["local_success_rate"] == 0.0


class FinishesJobsBetweenReads:
    """The spool's connection, with another process finishing a job after each read."""

    def __init__(self, conn, finish_one) -> None:
        self.conn = conn
        self.finish_one = finish_one

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql, params=()):
        cursor = self.conn.execute(sql, params)
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            self.finish_one()
        return cursor


@pytest.mark.parametrize("window_s", [None, DAY], ids=["all", "1d"])
def test_report_reads_one_snapshot_while_a_worker_finishes_jobs(spool, make, settings, clock,
                                                                window_s):
    for seconds in (1.0, 2.0, 3.0):
        make(seconds=seconds)
    with Store(settings.spool_path, clock=clock) as worker:
        def finish_one():
            job = worker.enqueue(intake.build({"prompt": "another"}, settings))[0]
            worker.transition(job.id, JobState.RUNNING, expect=JobState.QUEUED, backend="local",
                              model_used=SDXL, generation_time_s=0.5)
            worker.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING)

        now = clock()
        since = None if window_s is None else now - window_s
        real, spool.conn = spool.conn, FinishesJobsBetweenReads(spool.conn, finish_one)
        try:  # the Store opens the read snapshot the report runs in
            data = spool.stats_report(since, now).public()
        finally:
            spool.conn = real
    assert data["jobs"]["total"] == 3
    assert data["generation_time_s"][SDXL] == {"count": 3, "median_s": 2.0, "p95_s": 3.0, "max_s": 3.0}
    assert data["targets"]["median_generation_s"]["value"] == 2.0
    assert report(spool, window_s)["jobs"]["total"] > 3  # the worker's jobs were really written


def test_event_counts_use_the_partial_index_of_notable_events(store):
    """The index's condition and the query's must match word for word, or SQLite
    quietly scans every event: this fails if either side changes alone."""
    from zmm.store.stats import _NOTABLE

    plan = " ".join(row[3] for row in store.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT COUNT(*) FROM job_events WHERE {_NOTABLE} "
        "AND kind = 'downgrade' AND at >= '2026-01-01'"))
    assert "job_events_notable" in plan and "SCAN" not in plan
