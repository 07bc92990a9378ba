"""Retention SQL on real spool files: which jobs cleanup may consider, the guarded
marks, restores and purges, compression records and pinning, each with events."""

from __future__ import annotations

import json

import pytest

from tests.cleanup_support import make_job, make_queued
from zmm.errors import NotFound
from zmm.store import Store, history

STAMP = "2030-01-01T00:00:00.000000Z"


def ids(rows) -> list[str]:
    return [row["id"] for row in rows]


def kinds(store: Store, job_id: str) -> list[str]:
    return [event["kind"] for event in store.events(job_id)]


def test_candidates_are_finished_unpinned_with_assets_oldest_first(settings, store):
    newer = make_job(settings, age_days=10)
    older = make_job(settings, age_days=50)
    failed = make_job(settings, age_days=60, status="failed")
    cancelled = make_job(settings, age_days=5, status="cancelled")
    pinned = make_job(settings, age_days=70)
    store.pin(pinned.id)
    make_queued(settings)
    make_job(settings, status="running")
    assert ids(store.retention_candidates(("succeeded", "failed", "cancelled"),
                                          include_deleted=False)) == [older.id, newer.id]
    # rows without assets (failed, cancelled) only come along when they are to be purged
    assert ids(store.retention_candidates(("succeeded", "failed", "cancelled"),
                                          include_deleted=True)) == [
        failed.id, older.id, newer.id, cancelled.id]
    assert ids(store.retention_candidates(("failed",), include_deleted=True)) == [failed.id]
    with pytest.raises(ValueError):  # never an empty IN (), never queued/running
        list(store.retention_candidates(("queued", "running"), include_deleted=True))


def test_mark_is_guarded_and_recorded(settings, store):
    done = make_job(settings)
    pinned = make_job(settings)
    queued = make_queued(settings)
    store.pin(pinned.id)
    marked = store.mark_assets_deleted(
        [(done.id, "cleanup (age)"), (pinned.id, "x"), (queued.id, "x")], STAMP)
    assert marked == {done.id}
    assert store.get(done.id).asset_deleted_at == STAMP
    assert store.get(pinned.id).asset_deleted_at is None
    assert store.get(queued.id).asset_deleted_at is None
    assert kinds(store, done.id)[-1] == "assets_deleted"
    assert "assets_deleted" not in kinds(store, pinned.id)
    # a marked job is no longer a candidate, so nothing is deleted twice
    assert done.id not in ids(store.retention_candidates(("succeeded",), include_deleted=False))


def test_restore_undoes_only_this_runs_mark(settings, store):
    job = make_job(settings)
    earlier = make_job(settings)
    store.mark_assets_deleted([(earlier.id, "first run")], "2029-01-01T00:00:00.000000Z")
    store.mark_assets_deleted([(job.id, "m"), (earlier.id, "m")], STAMP)
    store.restore_assets([(job.id, "could not remove x"), (earlier.id, "x")], STAMP)
    assert store.get(job.id).asset_deleted_at is None
    assert store.get(earlier.id).asset_deleted_at == "2029-01-01T00:00:00.000000Z"
    assert kinds(store, job.id)[-1] == "assets_kept"


def test_purge_deletes_rows_events_and_search_entries(settings, store):
    gone = make_job(settings, prompt="a purple walrus")
    kept = make_job(settings, prompt="a purple heron")
    unmarked = make_job(settings, prompt="a purple crab")
    store.mark_assets_deleted([(gone.id, "m"), (kept.id, "m")], STAMP)
    store.pin(kept.id)
    assert store.purge_jobs([gone.id, kept.id, unmarked.id]) == 1
    with pytest.raises(NotFound):
        store.get(gone.id)
    remaining = {row[0] for row in store.conn.execute("SELECT DISTINCT job_seq FROM job_events")}
    assert gone.seq not in remaining and {kept.seq, unmarked.seq} <= remaining
    jobs, total = history.page(store.conn, history.HistoryFilter(search="purple"))
    assert total == 2 and {job.id for job in jobs} == {kept.id, unmarked.id}
    assert history.page(store.conn, history.HistoryFilter(search="walrus"))[1] == 0
    assert store.purge_jobs([]) == 0


def test_referenced_paths_and_active_ids(settings, store):
    job = make_job(settings, outputs=2)
    queued = make_queued(settings)
    running = make_job(settings, status="running")
    referenced = set(store.referenced_assets())
    assert referenced == {*job.output_list, job.thumbnail_path}
    assert store.active_job_ids() == {queued.id, running.id}


def test_compression_record_is_guarded_by_the_outputs(settings, store):
    job = make_job(settings)
    fields = {"output_path": "images/x.jpg", "outputs": json.dumps(["images/x.jpg"]),
              "file_size_bytes": 10, "sha256": "ab"}
    assert not store.record_compression(job.id, '["images/other.png"]', fields, "m")
    assert store.record_compression(job.id, job.outputs, fields, "png -> jpeg")
    after = store.get(job.id)
    assert (after.output_path, after.file_size_bytes, after.sha256) == ("images/x.jpg", 10, "ab")
    assert kinds(store, job.id)[-1] == "compressed"
    with pytest.raises(ValueError):
        store.record_compression(job.id, after.outputs, {"status": "queued"}, "m")


def test_pin_and_unpin_are_idempotent_with_events(settings, store):
    job = make_job(settings)
    pinned, changed = store.pin(job.id[:20])  # a unique prefix works like everywhere else
    assert pinned.pinned == 1 and changed
    assert store.pin(job.id)[1] is False
    assert kinds(store, job.id).count("pinned") == 1
    unpinned, changed = store.pin(job.id, False)
    assert unpinned.pinned == 0 and changed and kinds(store, job.id)[-1] == "unpinned"
    with pytest.raises(NotFound):
        store.pin("mmg-nope")
