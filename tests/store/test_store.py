"""The spool on real SQLite files: ordering, guarded transitions, leases, events."""

from __future__ import annotations

import sqlite3

import pytest

from zmm import intake
from zmm.errors import Conflict, NotFound, SpoolUnusable
from zmm.jobs import JobState
from zmm.store import Cancellation, Store, history
from zmm.store.db import migrations


def enqueue(spool, settings, prompt="a lighthouse", **fields):
    return spool.enqueue(intake.build(dict(prompt=prompt, **fields), settings))


def test_schema_is_migrated_once_and_versioned(settings, spool):
    version = spool.conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(migrations()) >= 1
    assert spool.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(settings.spool_path) as again:  # reopening applies nothing twice
        assert again.conn.execute("PRAGMA user_version").fetchone()[0] == version


def test_a_schema_3_spool_keeps_its_jobs_and_events_through_migrations_4_to_9(settings):
    """Schemas 4, 5 and 7 rebuild job_events and 6 and 8 the status indexes, and 9
    counts the jobs; a spool written by an earlier release keeps every job's events
    (its stored `enqueued` ones too), in the order they were written, new events
    follow them, and its jobs are found by status, counted and claimed as before."""
    from zmm.store.db import _statements

    settings.spool_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(settings.spool_path)
    for version, _name, script in migrations()[:3]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    for job_id in ("mmg-old", "mmg-other"):
        conn.execute("INSERT INTO jobs (id, status, priority, priority_rank, prompt, requester, "
                     "workflow, params, created_at, queued_at, queued_ts, updated_at) VALUES "
                     "(?, 'failed', 'HIGH', 1, 'old', 'user', 'sdxl-txt2img', '{}', "
                     "'2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z', 0, "
                     "'2026-11-01T00:00:00.000000Z')", [job_id])
    # The two jobs' events interleave, and one event names no job at all.
    written = [("mmg-old", "enqueued"), ("mmg-other", "enqueued"), ("mmg-gone", "enqueued"),
               ("mmg-old", "claimed"), ("mmg-other", "claimed"), ("mmg-other", "cancelled"),
               ("mmg-old", "failed")]
    for number, (job_id, kind) in enumerate(written, start=1):
        conn.execute("INSERT INTO job_events (id, job_id, at, kind) VALUES (?, ?, ?, ?)",
                     [number * 10, job_id, f"2026-11-01T00:00:0{number}.000000Z", kind])
    conn.commit()
    conn.close()
    with Store(settings.spool_path) as upgraded:
        job = upgraded.get("mmg-old")
        assert (job.backend_requested, job.cloud_allowed) == ("auto", 0)
        upgraded.retry(["mmg-old"])
        kinds = [event["kind"] for event in upgraded.events("mmg-old")]
        other = [event["kind"] for event in upgraded.events("mmg-other")]
        numbers = [row[0] for row in upgraded.conn.execute(
            "SELECT n FROM job_events WHERE job_seq = ? ORDER BY n", [job.seq])]
        total = upgraded.conn.execute("SELECT COUNT(*) FROM job_events").fetchone()[0]
        failed, _ = history.page(upgraded.conn, history.HistoryFilter(statuses=("failed",)))
        claimed = upgraded.claim("w", lease_s=60, aging_s=600)
        counts = dict(upgraded.conn.execute("SELECT key, n FROM job_counts"))
        indexes = dict(upgraded.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"))
    assert [job.id for job in failed] == ["mmg-other"] and claimed.id == "mmg-old"
    assert counts == {"all": 2}  # neither old job names a model
    assert {"jobs_open", "jobs_done"} <= set(indexes)
    assert indexes["jobs_done"].endswith("WHERE status NOT IN ('queued', 'running')")
    assert not {"jobs_status_seq", "jobs_runnable"} & set(indexes)
    assert kinds == ["enqueued", "claimed", "failed", "retry"]
    assert other == ["enqueued", "claimed", "cancelled"]
    assert numbers == [1, 2, 3, 4]
    assert total == 7  # the event of a job with no row is not carried over


def test_a_new_spool_gets_the_page_size_an_old_one_keeps_its_own(settings, tmp_path):
    from zmm.store.db import PAGE_BYTES

    with Store(settings.spool_path) as spool:
        assert spool.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_BYTES != 4096
    old = tmp_path / "old" / "spool.db"
    old.parent.mkdir()
    with sqlite3.connect(old) as conn:  # an earlier release's spool: SQLite's default pages
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
    with Store(old) as spool:
        job = enqueue(spool, settings)[0]
        assert spool.claim("w", lease_s=60, aging_s=600).id == job.id
        assert spool.conn.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_the_wal_is_checkpointed_back_to_the_start_and_stays_bounded(settings, monkeypatch):
    from zmm.store import db

    monkeypatch.setattr(db, "CHECKPOINT_PAGES", 300)
    wal = settings.spool_path.with_name(settings.spool_path.name + "-wal")
    with Store(settings.spool_path) as spool:
        page = spool.conn.execute("PRAGMA page_size").fetchone()[0]
        jobs = enqueue(spool, settings, count=50)
        for _ in jobs:
            spool.claim("w1", lease_s=60, aging_s=600)
        sizes = []
        for round_ in range(40):  # ~2 frames per update: several checkpoints' worth
            for job in jobs:
                spool.update(job.id, worker_id="w1", phase_detail=f"round {round_:03d}")
            sizes.append(wal.stat().st_size)
        assert max(sizes) <= (300 + 100) * (page + 24)  # a checkpoint's worth, plus slack
        with sqlite3.connect(settings.spool_path) as raw:  # a second reader sees it all
            assert raw.execute("SELECT COUNT(*) FROM jobs WHERE phase_detail = 'round 039'"
                               ).fetchone()[0] == 50


def test_spool_file_is_private(settings, spool):
    assert settings.spool_path.stat().st_mode & 0o077 == 0
    assert settings.home.stat().st_mode & 0o077 == 0


def test_ids_are_readable_and_unique(spool, settings):
    jobs = enqueue(spool, settings, count=50)
    ids = [job.id for job in jobs]
    assert len(set(ids)) == 50
    assert all(job_id.startswith("mmg-") and len(job_id) == len("mmg-20261123-101500-1a2b3c4d")
               for job_id in ids)
    assert [job.seed for job in jobs] == list(range(jobs[0].seed, jobs[0].seed + 50))


def test_claim_takes_priority_order_then_fifo(spool, settings, clock):
    low = enqueue(spool, settings, priority="LOW")[0]
    clock.advance(1)
    high1 = enqueue(spool, settings, priority="HIGH")[0]
    clock.advance(1)
    critical = enqueue(spool, settings, priority="CRITICAL")[0]
    clock.advance(1)
    high2 = enqueue(spool, settings, priority="HIGH")[0]
    order = [spool.claim("w", lease_s=60, aging_s=3600).id for _ in range(4)]
    assert order == [critical.id, high1.id, high2.id, low.id]
    assert spool.claim("w", lease_s=60, aging_s=3600) is None


def test_aging_lifts_low_but_never_above_critical(spool, settings, clock):
    low = enqueue(spool, settings, priority="LOW")[0]
    clock.advance(650)  # more than two aging periods: LOW now ranks like HIGH
    high = enqueue(spool, settings, priority="HIGH")[0]
    critical = enqueue(spool, settings, priority="CRITICAL")[0]
    order = [spool.claim("w", lease_s=60, aging_s=300).id for _ in range(3)]
    assert order == [critical.id, low.id, high.id]


def test_claim_is_guarded_and_records_events(spool, settings):
    job = enqueue(spool, settings)[0]
    claimed = spool.claim("worker-a", lease_s=60, aging_s=600)
    assert claimed.status == "running" and claimed.worker_id == "worker-a"
    with pytest.raises(Conflict):
        spool.transition(job.id, JobState.SUCCEEDED, expect=JobState.QUEUED)
    with pytest.raises(Conflict):  # another worker cannot finish it
        spool.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING, worker_id="worker-b")
    done = spool.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING,
                            worker_id="worker-a", output_path="images/x.png")
    assert done.status == "succeeded" and done.completed_at and done.lease_expires_at is None
    kinds = [(e["kind"], e["from"], e["to"]) for e in spool.events(job.id)]
    assert kinds == [("enqueued", None, "queued"), ("claimed", "queued", "running"),
                     ("succeeded", "running", "succeeded")]


def test_paused_spool_claims_nothing(spool, settings):
    enqueue(spool, settings)
    spool.set_state("paused", True)
    assert spool.claim("w", lease_s=60, aging_s=600) is None
    spool.set_state("paused", False)
    assert spool.claim("w", lease_s=60, aging_s=600) is not None


def test_expired_lease_is_found_and_adopted_once(spool, settings, clock):
    job = enqueue(spool, settings)[0]
    spool.claim("dead", lease_s=30, aging_s=600)
    assert spool.expired_leases() == []
    clock.advance(31)
    assert [j.id for j in spool.expired_leases()] == [job.id]
    assert spool.adopt(job.id, "new", lease_s=30, reason="lease expired").worker_id == "new"
    assert spool.adopt(job.id, "third", lease_s=30, reason="lease expired") is None


def test_heartbeat_extends_only_own_leases(spool, settings, clock):
    job = enqueue(spool, settings)[0]
    spool.claim("w1", lease_s=30, aging_s=600)
    clock.advance(20)
    spool.heartbeat("w2", [job.id], lease_s=30)
    clock.advance(15)
    assert spool.expired_leases()
    spool.heartbeat("w1", [job.id], lease_s=30)
    assert not spool.expired_leases()


def test_cancel_queued_now_running_by_request_finished_refused(spool, settings):
    queued, running, done = enqueue(spool, settings, count=3)
    spool.claim("w", lease_s=60, aging_s=600)  # takes `queued` (FIFO)
    spool.claim("w", lease_s=60, aging_s=600)  # takes `running`
    spool.transition(running.id, JobState.SUCCEEDED, expect=JobState.RUNNING)
    assert spool.cancel([done.id]) == [Cancellation(done.id, "cancelled", JobState.CANCELLED)]
    assert spool.cancel([queued.id]) == [Cancellation(queued.id, "cancel requested",
                                                      JobState.RUNNING)]
    assert spool.get(queued.id).status == "running" and spool.get(queued.id).cancel_requested_at
    (finished,) = spool.cancel([running.id])
    assert finished == Cancellation(running.id, "already succeeded", JobState.SUCCEEDED)
    assert finished.refused and spool.get(running.id).status == "succeeded"


class FinishingClock:
    """The spool's clock, which finishes `job_id` through a second connection the
    first time it is read after `arm()`: the job's worker finishing it between
    the cancel's read of the job and its write."""

    def __init__(self, settings, clock) -> None:
        self.settings, self.clock, self.job_id = settings, clock, None

    def arm(self, job_id: str) -> None:
        self.job_id = job_id

    def __call__(self) -> float:
        if self.job_id is not None:
            job_id, self.job_id = self.job_id, None
            with Store(self.settings.spool_path, clock=self.clock) as worker:
                worker.transition(job_id, JobState.SUCCEEDED, expect=JobState.RUNNING,
                                  worker_id="w")
        return self.clock()


def test_cancel_of_a_job_that_finishes_meanwhile_says_so(settings, clock):
    racing = FinishingClock(settings, clock)
    with Store(settings.spool_path, clock=racing) as spool:
        (job,) = enqueue(spool, settings)
        spool.claim("w", lease_s=60, aging_s=600)
        racing.arm(job.id)  # read as running; finished before the cancel request is written
        (result,) = spool.cancel([job.id])
        assert result == Cancellation(job.id, "already succeeded", JobState.SUCCEEDED)
        final = spool.get(job.id)
        assert final.status == "succeeded" and final.cancel_requested_at is None
        assert "cancel_requested" not in [event["kind"] for event in spool.events(job.id)]


def test_a_value_the_schema_refuses_is_invalid_input_not_a_traceback(spool, settings):
    import dataclasses

    from zmm.errors import InvalidInput

    (spec,) = intake.build({"prompt": "a lighthouse"}, settings)
    with pytest.raises(InvalidInput) as refused:
        spool.enqueue([spec, dataclasses.replace(spec, backend_requested="gpu")])
    assert str(refused.value) == "backend: one of auto, local, cloud"
    with pytest.raises(InvalidInput) as missing:
        spool.enqueue([dataclasses.replace(spec, requester=None)])
    assert refused.value.exit_code == 2 and missing.value.field == "requester"
    assert spool.history_page(history.HistoryFilter())[1] == 0  # all or nothing


def test_retry_and_priority_change(spool, settings):
    job = enqueue(spool, settings, priority="LOW")[0]
    moved = spool.set_priority(job.id, queries_priority("CRITICAL"))
    assert moved.priority == "CRITICAL" and moved.priority_rank == 0
    spool.claim("w", lease_s=60, aging_s=600)
    spool.transition(job.id, JobState.FAILED, expect=JobState.RUNNING, error_message="boom")
    again = spool.retry([job.id])[0]
    assert again.status == "queued" and again.retry_count == 1 and again.error_message is None
    with pytest.raises(Conflict):
        spool.retry([job.id])


def queries_priority(name):
    from zmm.jobs import parse_priority

    return parse_priority(name)


def test_unknown_job_and_prefix_lookup(spool, settings):
    job = enqueue(spool, settings)[0]
    assert spool.get(job.id[:-3]).id == job.id
    with pytest.raises(NotFound):
        spool.get("mmg-19990101-000000-00000000")


def test_history_filters_search_and_total(spool, settings):
    enqueue(spool, settings, prompt="red lighthouse at dusk", requester="agent-1")
    enqueue(spool, settings, prompt="blue whale", requester="agent-2", count=3)
    page, total = history.page(spool.conn, history.HistoryFilter(search="lighthouse"))
    assert total == 1 and page[0].prompt == "red lighthouse at dusk"
    page, total = history.page(spool.conn, history.HistoryFilter(requester="agent-2", limit=2))
    assert total == 3 and len(page) == 2
    assert page[0].seq > page[1].seq  # newest first
    _, total = history.page(spool.conn, history.HistoryFilter(search='"; DROP TABLE jobs; --'))
    assert total == 0


def test_corrupt_spool_is_a_clear_error(settings):
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.spool_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolUnusable, match="not a usable SQLite database"):
        Store(settings.spool_path)


def test_newer_schema_is_refused(settings):
    with Store(settings.spool_path):
        pass
    conn = sqlite3.connect(settings.spool_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SpoolUnusable, match="newer than this zmm knows"):
        Store(settings.spool_path)


def test_grouping_prefers_the_loaded_model_but_bounds_the_wait(spool, settings, clock):
    ids = []
    for model in ["sdxl", "sd15", "sdxl", "sd15", "sdxl", "sd15"]:
        ids += [job.id for job in enqueue(spool, settings, priority="LOW", model=model)]
        clock.advance(1)
    sd15 = settings.get("models.sd15")
    first = spool.claim("w", lease_s=60, aging_s=3600, prefer_model=sd15, group_window=1)
    assert first.id == ids[1]  # the SD1.5 job, passing one SDXL job
    second = spool.claim("w", lease_s=60, aging_s=3600, prefer_model=sd15, group_window=1)
    assert second.id == ids[0]  # ids[0] was passed once: it may not be passed again


def test_grouping_never_crosses_a_priority_class(spool, settings, clock):
    high = enqueue(spool, settings, priority="HIGH", model="sdxl")[0]
    enqueue(spool, settings, priority="LOW", model="sd15")
    claimed = spool.claim("w", lease_s=60, aging_s=3600, prefer_model=settings.get("models.sd15"),
                          group_window=8)
    assert claimed.id == high.id


def test_search_alone_pages_like_the_general_query(spool, settings):
    for n in range(30):
        enqueue(spool, settings, prompt=f"{'red' if n % 3 else 'blue'} lighthouse number{n}")
    for offset in (0, 5, 18):
        fast, total = history.page(spool.conn, history.HistoryFilter(search="red", limit=4,
                                                                     offset=offset))
        general, general_total = history.page(spool.conn, history.HistoryFilter(
            search="red", statuses=("queued",), limit=4, offset=offset))
        assert [j.id for j in fast] == [j.id for j in general] and total == general_total == 20


@pytest.mark.parametrize("flt", [
    history.HistoryFilter(), history.HistoryFilter(statuses=("failed",)),
    history.HistoryFilter(statuses=("queued", "succeeded")),
    history.HistoryFilter(backend="stability", requester="ci", since_iso="2026-01-01"),
    history.HistoryFilter(model="sd_xl_base_1.0.safetensors", request_type="image")])
def test_history_cost_reads_only_the_costly_index(spool, flt):
    """The cost sum must stay O(cloud jobs) whatever the filter: it may read only
    the partial index of costly rows, never the jobs table."""
    traced: list[str] = []
    spool.conn.set_trace_callback(traced.append)
    history.cost(spool.conn, flt)
    spool.conn.set_trace_callback(None)
    (sql,) = traced
    plan = " ".join(row[3] for row in spool.conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "COVERING INDEX jobs_costly" in plan, plan


def test_history_cost_sums_what_the_filter_lists(spool, settings):
    jobs = [job.id for job in enqueue(spool, settings, count=3)]
    for job_id, backend, cost in zip(jobs, ("stability", "openai", "local"), (0.03, 0.0086, 0.0),
                                     strict=True):
        spool.claim("w", lease_s=60, aging_s=600, only_ids=[job_id])
        spool.transition(job_id, JobState.SUCCEEDED, expect=JobState.RUNNING, backend=backend,
                         cost_usd=cost)
    assert history.cost(spool.conn, history.HistoryFilter()) == 0.0386
    assert history.cost(spool.conn, history.HistoryFilter(backend="openai")) == 0.0086
    assert history.cost(spool.conn, history.HistoryFilter(backend="local")) == 0.0
    page, total = history.page(spool.conn, history.HistoryFilter(backend="stability"))
    assert total == 1 and page[0].id == jobs[0]


def test_each_job_keeps_its_own_event_ids_and_the_table_refuses_an_overflow(spool, settings):
    """Events are ids seq * 2**20 + n: interleaved writes stay in their job's range,
    in order, and a job's 2**20th event could only land in the next job's range."""
    from zmm.store import events

    first, second = enqueue(spool, settings, count=2)
    for job in (first, second, first):
        spool.add_event(job.id, "notice", f"for {job.id}")
    assert [e["kind"] for e in spool.events(first.id)] == ["enqueued", "notice", "notice"]
    assert [e["kind"] for e in spool.events(second.id)] == ["enqueued", "notice"]
    ids = [row[0] for row in spool.conn.execute("SELECT id FROM job_events ORDER BY id")]
    assert ids == [events.span(first.seq)[0], events.span(first.seq)[0] + 1,
                   events.span(second.seq)[0]]
    last = events.span(first.seq)[1]
    spool.conn.execute("INSERT INTO job_events (id, at, kind) VALUES (?, 'x', 'filler')", [last])
    with pytest.raises(SpoolUnusable):  # the CHECK refuses it; nothing spills over
        spool.add_event(first.id, "notice", "one too many")
    assert [e["kind"] for e in spool.events(second.id)] == ["enqueued", "notice"]
