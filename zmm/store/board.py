"""What `zmm top` shows, read from the spool in one snapshot: the backends and
live workers, the running jobs, the head of the queue in claim order, open jobs
per priority, what finished in the last hour and the latest failures.

Read-only; Store.board runs it inside one read snapshot. Every query is limited
or answered from an index alone (jobs_open, jobs_done, jobs_completed), so a
frame costs milliseconds with 100,000 jobs in the spool (bench/top_bench.py).
Never formats; zmm.views.dashboard turns this into a frame.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from zmm.store import backends, queries
from zmm.store.queries import DONE, OPEN
from zmm.timestamps import iso

FINISHED_STATES = ("succeeded", "failed", "cancelled")
# The window's finished jobs come from jobs_completed (completed_at), newest first;
# past FINISHED_LIMIT the frame says "at least" (`finished_partial`).
FINISHED_LIMIT = 20_000

_RUNNING = ("SELECT id, priority, prompt, model, phase, phase_detail, progress_value, "
            "progress_max, started_at, submitted_at, worker_id, comfy_url, backend, on_backend, "
            f"backend_name, cancel_requested_at FROM jobs WHERE {OPEN} AND status = 'running' "
            "ORDER BY started_at, seq")
# Open jobs per priority class: a count of index entries, no row is read.
_OPEN_BY_RANK = f"SELECT priority_rank, COUNT(*) FROM jobs WHERE {OPEN} GROUP BY priority_rank"
_FINISHED = ("SELECT status, completed_at, generation_time_s FROM jobs "
             "WHERE completed_at >= :since AND status IN ('succeeded', 'failed', 'cancelled') "
             "ORDER BY completed_at DESC LIMIT :limit")
_FAILURES = (f"SELECT id, completed_at, error_message, model, comfy_url, backend_name, "
             "worker_id FROM ("
             f"SELECT * FROM jobs WHERE {DONE} AND status = 'failed' ORDER BY seq DESC "
             "LIMIT :scan) ORDER BY completed_at DESC LIMIT :limit")


@dataclass(frozen=True)
class Board:
    """One consistent read of the spool; rows as plain dicts."""

    paused: bool
    backends: list[dict[str, Any]]  # zmm.store.backends.rows
    workers: list[dict[str, Any]]  # live ones (heartbeat since `worker_since`)
    running: list[dict[str, Any]]
    head: list[dict[str, Any]]  # the next claimable jobs, in claim order, with `rank`
    open_by_rank: dict[int, int]  # queued + running jobs per priority rank
    finished: list[tuple[str, str, float | None]]  # (status, completed_at, generation_time_s)
    finished_partial: bool  # the scan limit was reached inside the window
    failures: list[dict[str, Any]]  # newest first


def read(conn: sqlite3.Connection, now: float, *, aging_s: float, worker_since: float,
         head: int, failures: int, window_s: float,
         limit: int = FINISHED_LIMIT) -> Board:
    """Everything one frame needs; the Store runs it inside one read snapshot."""
    finished, partial = _finished(conn, iso(now - window_s), limit)
    return Board(
        paused=queries.paused(conn),
        backends=backends.rows(conn),
        workers=queries.live_workers(conn, iso(worker_since)),
        running=[dict(row) for row in conn.execute(_RUNNING)],
        head=_head(conn, now, aging_s, head),
        open_by_rank={rank: count for rank, count in conn.execute(_OPEN_BY_RANK)},
        finished=finished,
        finished_partial=partial,
        failures=[dict(row) for row in conn.execute(
            _FAILURES, {"scan": max(failures * 10, 50), "limit": failures})],
    )


def _head(conn: sqlite3.Connection, now: float, aging_s: float, limit: int) -> list[dict[str, Any]]:
    """The next `limit` jobs a worker would claim, through the claim's own query
    (zmm.store.queries.candidates_query), with the columns the panel shows."""
    if limit <= 0:
        return []
    pick, params = queries.candidates_query(now, aging_s, limit=limit)
    rows = conn.execute(
        "SELECT jobs.id, jobs.priority, jobs.prompt, jobs.requester, jobs.model, "
        "jobs.queued_ts, jobs.created_at, jobs.on_backend, jobs.phase_detail, picked.rank "
        f"FROM ({pick}) AS picked JOIN jobs ON jobs.id = picked.id "
        "ORDER BY picked.rank, jobs.seq", params)
    return [dict(row) for row in rows]


def _finished(conn: sqlite3.Connection, since_iso: str,
              limit: int) -> tuple[list[tuple[str, str, float | None]], bool]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: thousands of rows, three fields each
    found = cursor.execute(_FINISHED, {"since": since_iso, "limit": limit}).fetchall()
    return found, len(found) >= limit
