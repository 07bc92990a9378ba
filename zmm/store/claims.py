"""Claiming: the guarded UPDATE that moves a queued job to running for one
worker, either the next job for ComfyUI (priority with aging, FIFO inside a
class, the loaded checkpoint preferred within a window) or the next job a
cloud provider may take. The UPDATE itself refuses while the spool is paused
or the worker's backend is drained, so no claim slips past either switch.
Runs inside the caller's write transaction and writes the `claimed` event
with it; which job comes next is zmm.store.queries'.
"""

from __future__ import annotations

import functools
import sqlite3

from zmm.store import backends, events, queries
from zmm.timestamps import iso

_TAKE = """UPDATE jobs SET status = 'running', worker_id = :worker, lease_expires_at = :lease,
               started_at = COALESCE(started_at, :now_iso), updated_at = :now_iso,
               phase = :phase, phase_detail = NULL, backend_name = :backend_name
           WHERE status = 'queued' AND NOT EXISTS (
               SELECT 1 FROM spool_state WHERE key = 'paused' AND value = 'true')
             AND NOT EXISTS (SELECT 1 FROM backends WHERE name = :drained AND draining = 1)
             AND id = {target} RETURNING *"""


def take_next(conn: sqlite3.Connection, worker_id: str, now: float, *, lease_s: float,
              aging_s: float, min_rank: int | None, only_ids: list[str] | None,
              prefer_model: str | None, group_window: int,
              route: queries.Route | None = None,
              backend_name: str | None = None) -> sqlite3.Row | None:
    """Take the next job for ComfyUI; with `route`, only one that backend can run
    (pinned to it or to none, every needed file on its server). The job records
    `backend_name` (the worker's backend), else the route's."""
    named = backend_name if backend_name is not None else (
        route.name if route is not None else None)
    taking = {"worker": worker_id, "lease": iso(now + lease_s), "now_iso": iso(now),
              "phase": "claimed", "drained": route.name if route is not None else None,
              "backend_name": named}
    if (prefer_model is None or group_window <= 0) and min_rank in (None, 0):
        # One statement: pick and take the head of the queue together.
        pick, params = queries.candidates_query(now, aging_s, limit=1,
                                                critical_only=min_rank == 0, only_ids=only_ids,
                                                route=route)
        params.update(taking)
        row = conn.execute(_take_head(pick), params).fetchone()
    else:
        if queries.paused(conn) or (route is not None and backends.is_draining(conn, route.name)):
            return None
        rows = queries.candidates(conn, now, aging_s, limit=group_window + 1, min_rank=min_rank,
                                  only_ids=only_ids, route=route)
        if not rows:
            return None
        index = queries.pick_grouped(rows, prefer_model, group_window)
        if index:
            passed = [row["id"] for row in rows[:index]]
            conn.execute(f"UPDATE jobs SET passed_over = passed_over + 1 WHERE id IN "
                         f"({','.join('?' * len(passed))})", passed)
        row = conn.execute(_TAKE.format(target=":id"),
                           {**taking, "id": rows[index]["id"]}).fetchone()
    if row is not None:
        events.write(conn, row["id"], "claimed", "queued", "running", f"by {worker_id}", iso(now),
                     seq=row["seq"])
    return row


def take_for_cloud(conn: sqlite3.Connection, worker_id: str, now: float, *, lease_s: float,
                   down_since: float | None, max_wait_s: dict[str, float],
                   only_ids: list[str] | None, stranded: str | None = None) -> sqlite3.Row | None:
    pick, params = queries.cloud_query(now, down_since=down_since, max_wait_s=max_wait_s,
                                       only_ids=only_ids, stranded=stranded)
    params.update(worker=worker_id, lease=iso(now + lease_s), phase="cloud", drained=None,
                  backend_name=None)  # held by no ComfyUI backend
    row = conn.execute(_TAKE.format(target=f"({pick})"), params).fetchone()
    if row is not None:
        events.write(conn, row["id"], "claimed", "queued", "running",
                     f"by {worker_id} for the cloud", iso(now), seq=row["seq"])
    return row


@functools.lru_cache(maxsize=16)  # one per shape of the pick query
def _take_head(pick: str) -> str:
    return _TAKE.format(target=f"(SELECT id FROM ({pick}))")
