"""The counts of jobs the spool keeps by trigger (migration 0009), in all and by
model, against counting the rows: through enqueueing, model changes, retries and
purges, and in what `zmm history` reports as the total."""

from __future__ import annotations

import sqlite3

from zmm import intake
from zmm.jobs import JobState
from zmm.store import history

SDXL, SD15 = "sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"


def kept(conn: sqlite3.Connection) -> dict[str, int]:
    return {key: n for key, n in conn.execute("SELECT key, n FROM job_counts") if n}


def counted(conn: sqlite3.Connection) -> dict[str, int]:
    by_model = {f"model:{model}": n for model, n in conn.execute(
        "SELECT model, COUNT(*) FROM jobs WHERE model IS NOT NULL GROUP BY model")}
    total = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    return {"all": total, **by_model} if total else by_model


def test_the_kept_counts_follow_every_change_of_the_jobs(spool, settings):
    def enqueue(checkpoint, count=1):
        spec = {"prompt": "a lighthouse", "model": checkpoint, "count": count}
        return spool.enqueue(intake.build(spec, settings))

    conn = spool.conn
    assert kept(conn) == counted(conn) == {}
    sdxl = enqueue(SDXL, count=3)
    sd15 = enqueue(SD15)
    assert kept(conn) == counted(conn) == {"all": 4, f"model:{SDXL}": 3, f"model:{SD15}": 1}
    # A job that ran on another checkpoint than it asked for moves between models.
    spool.claim("w", lease_s=60, aging_s=600, only_ids=[sdxl[0].id])
    spool.transition(sdxl[0].id, JobState.SUCCEEDED, expect=JobState.RUNNING, model_used=SD15)
    # One that ran on the checkpoint it asked for changes no count.
    spool.claim("w", lease_s=60, aging_s=600, only_ids=[sdxl[1].id])
    spool.transition(sdxl[1].id, JobState.FAILED, expect=JobState.RUNNING, model_used=SDXL)
    spool.retry([sdxl[1].id])
    assert kept(conn) == counted(conn) == {"all": 4, f"model:{SDXL}": 2, f"model:{SD15}": 2}
    conn.execute("UPDATE jobs SET model_requested = ? WHERE id = ?", [SDXL, sd15[0].id])
    assert kept(conn) == counted(conn) == {"all": 4, f"model:{SDXL}": 3, f"model:{SD15}": 1}
    spool.mark_assets_deleted([(sdxl[0].id, "files removed")], "2026-12-01T00:00:00.000000Z")
    assert spool.purge_jobs([sdxl[0].id]) == 1  # cleanup removes the row of a finished job
    assert kept(conn) == counted(conn) == {"all": 3, f"model:{SDXL}": 3}


def test_history_totals_from_the_kept_counts_match_counting(spool, settings):
    for checkpoint in (SDXL, SD15, SD15):
        spool.enqueue(intake.build({"prompt": "a lighthouse", "model": checkpoint}, settings))
    rows = spool.conn.execute("SELECT id, model, created_at FROM jobs ORDER BY seq DESC").fetchall()
    middle = rows[1]["created_at"]
    for flt in (history.HistoryFilter(), history.HistoryFilter(model=SD15),
                history.HistoryFilter(model="no-such.safetensors"),
                history.HistoryFilter(model=SD15, limit=1, offset=1),
                history.HistoryFilter(model=SD15, since_iso=middle),  # counted, not kept
                history.HistoryFilter(since_iso=middle, limit=1)):
        page, total = history.page(spool.conn, flt)
        expected = [row["id"] for row in rows if flt.model in (None, row["model"])
                    and (flt.since_iso is None or row["created_at"] >= flt.since_iso)]
        assert total == len(expected), flt
        assert [job.id for job in page] == expected[flt.offset:flt.offset + flt.limit], flt
    # Counts that disagree with the rows show that the total came from them.
    spool.conn.execute("UPDATE job_counts SET n = 99 WHERE key = 'all'")
    assert history.page(spool.conn, history.HistoryFilter())[1] == 99
    assert history.page(spool.conn, history.HistoryFilter(statuses=("queued",)))[1] == 3
