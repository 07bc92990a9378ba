"""Reads of the spool: the job record (a `Job`, zmm.store.job_row), run order,
listings, history and events.

Functions take an open connection and return plain values; they never write.
Every query by status names the partial index that holds those jobs (OPEN or
DONE, below): without its condition SQLite reads the table. `zmm history`'s
pages are in zmm.store.history.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zmm.store import events as event_rows
from zmm.store.job_row import Job

# The conditions of the partial indexes jobs_open and jobs_done (migrations 0006,
# 0008), word for word: SQLite uses a partial index only for a query that repeats its
# condition, so `status = 'queued'` alone would read every row.
OPEN = "status IN ('queued', 'running')"
DONE = "status NOT IN ('queued', 'running')"
_OPEN_STATES = ("queued", "running")


def status_parts(statuses: Iterable[str]) -> list[tuple[str, list[str], str]]:
    """Conditions for jobs in any of `statuses`, as (where, parameters, order): one
    for the open ones, answered from jobs_open, and one for the finished ones, from
    jobs_done. `order` is how that part writes ORDER BY seq. jobs_done's (status,
    seq) order serves it; jobs_open is in claim order, and for an order its index
    cannot serve SQLite would rather read the whole table in seq order than sort
    the few open jobs, so the open part says `+seq`, which it can only sort."""
    wanted = list(dict.fromkeys(statuses))
    if not wanted:  # a bug in the caller: an empty IN () would silently match nothing
        raise ValueError("a status condition needs at least one status")
    opened = [status for status in wanted if status in _OPEN_STATES]
    done = [status for status in wanted if status not in _OPEN_STATES]
    return [(f"{scope} AND status IN ({','.join('?' * len(chosen))})", chosen, order)
            for scope, chosen, order in ((OPEN, opened, "+seq"), (DONE, done, "seq")) if chosen]


def status_in(statuses: Iterable[str]) -> tuple[str, list[str], str]:
    """The one (where, parameters, order) for statuses all open or all finished."""
    parts = status_parts(statuses)
    if len(parts) != 1:
        raise ValueError("open and finished statuses need a condition each (status_parts)")
    return parts[0]


# Aged rank: a waiting job climbs one class per `aging_s`, but only CRITICAL
# jobs ever hold rank 0, so a CRITICAL job is never overtaken.
_EFFECTIVE_RANK = """MAX(CASE WHEN priority_rank = 0 THEN 0 ELSE 1 END,
                         priority_rank - CAST((:now - queued_ts) / :aging AS INTEGER))"""
# Runnable on ComfyUI: jobs asking for the cloud only are the cloud lane's (cloud_query).
_RUNNABLE = (f"{OPEN} AND status = 'queued' AND (not_before IS NULL OR not_before <= :now_iso) "
             "AND backend_requested != 'cloud'")
# Runnable on one backend (:backend, whose server has the files in :have, a JSON
# list): not pinned to another backend, and no needed file missing from :have.
# Jobs from before schema 10 have no needs (NULL) and run anywhere.
_ROUTED = (" AND (on_backend IS NULL OR on_backend = :backend) AND (needs IS NULL OR NOT EXISTS ("
           "SELECT 1 FROM json_each(jobs.needs) "
           "WHERE value NOT IN (SELECT value FROM json_each(:have))))")


@dataclass(frozen=True)
class Route:
    """What one worker may claim: jobs for its backend `name` (pinned there or
    nowhere) whose every needed file is in `files`, the JSON list of the
    'folder/name' files its server has. `Route.of` builds it."""

    name: str
    files: str

    @classmethod
    def of(cls, name: str, files: Iterable[str]) -> Route:
        return cls(name, json.dumps(sorted(set(files))))


def paused(conn: sqlite3.Connection) -> bool:
    """Whether `zmm queue pause` is in force; the claim UPDATE checks the same row."""
    row = conn.execute("SELECT value FROM spool_state WHERE key = 'paused'").fetchone()
    return row is not None and row[0] == "true"


def next_runnable(conn: sqlite3.Connection, now: float, aging_s: float, *,
                  min_rank: int | None = None, only_ids: list[str] | None = None,
                  route: Route | None = None) -> str | None:
    """The id of the job a worker should claim next (`only_ids`: among those;
    `route`: among those its backend can run)."""
    rows = candidates(conn, now, aging_s, limit=1, min_rank=min_rank, only_ids=only_ids,
                      route=route)
    return rows[0]["id"] if rows else None


def candidates(conn: sqlite3.Connection, now: float, aging_s: float, *, limit: int,
               min_rank: int | None = None, only_ids: list[str] | None = None,
               route: Route | None = None) -> list[sqlite3.Row]:
    """The first `limit` runnable jobs in claim order: id, model, rank, passed_over."""
    sql, params = candidates_query(now, aging_s, limit=limit, critical_only=min_rank == 0,
                                   only_ids=only_ids, route=route)
    rows = conn.execute(sql, params).fetchall()
    if min_rank is not None:
        rows = [row for row in rows if row["rank"] <= min_rank]
    return rows


def candidates_query(now: float, aging_s: float, *, limit: int, critical_only: bool = False,
                     only_ids: list[str] | None = None,
                     route: Route | None = None) -> tuple[str, dict[str, Any]]:
    """SQL (and its parameters) for the first `limit` runnable jobs in claim order
    (with `route`: those its backend can run; None: any backend's).

    Each priority class contributes its first `limit` jobs in FIFO order through
    the partial index `jobs_open`; only those few rows get an aged rank, so a
    claim costs the same with ten queued jobs or a hundred thousand (as long as
    the jobs at the head are ones the backend can run: the ones it cannot are
    stepped over one by one)."""
    from zmm.timestamps import iso

    params: dict[str, Any] = {"now": now, "aging": max(aging_s, 1e-9), "now_iso": iso(now),
                              "limit": limit}
    if route is not None:
        params.update(backend=route.name, have=route.files)
    return _candidates_sql(critical_only, _only(only_ids, params), route is not None), params


@functools.lru_cache(maxsize=16)  # built once per shape: every claim runs it
def _candidates_sql(critical_only: bool, only: str, routed: bool = False) -> str:
    where = _RUNNABLE + only + (_ROUTED if routed else "")
    heads = " UNION ALL ".join(
        f"SELECT * FROM (SELECT id, model_requested, passed_over, priority_rank, queued_ts, seq "
        f"FROM jobs WHERE {where} AND priority_rank = {rank} ORDER BY seq LIMIT :limit)"
        for rank in ([0] if critical_only else [0, 1, 2, 3]))
    return (f"SELECT id, model_requested, passed_over, {_EFFECTIVE_RANK} AS rank FROM ({heads}) "
            f"ORDER BY rank, seq LIMIT :limit")


def cloud_query(now: float, *, down_since: float | None, max_wait_s: dict[str, float],
                only_ids: list[str] | None = None,
                stranded: str | None = None) -> tuple[str, dict[str, Any]]:
    """SQL for the next job the cloud may take now: one that asked for the cloud,
    or one allowed to fall back that has waited through a ComfyUI outage
    (`down_since`) for longer than its priority's max wait, or one no live
    backend can run (its needs and pin among `stranded`, a JSON list of
    [needs, on_backend] pairs) queued for longer than its max wait."""
    from zmm.timestamps import iso

    params: dict[str, Any] = {"now": now, "now_iso": iso(now), "down": down_since,
                              "stranded": stranded, **_max_waits(max_wait_s)}
    where = (f"{OPEN} AND status = 'queued' AND cloud_allowed = 1 AND (not_before IS NULL OR "
             "not_before <= :now_iso) AND (backend_requested = 'cloud' OR (:down IS NOT NULL "
             f"AND :now - MAX(queued_ts, :down) >= {_MAX_WAIT}) OR (:stranded IS NOT NULL "
             f"AND :now - queued_ts >= {_MAX_WAIT} AND EXISTS (SELECT 1 FROM "
             "json_each(:stranded) WHERE json_extract(value, '$[0]') IS jobs.needs "
             "AND json_extract(value, '$[1]') IS jobs.on_backend)))")
    where += _only(only_ids, params)
    return (f"SELECT id FROM jobs WHERE {where} ORDER BY priority_rank, seq LIMIT 1"), params


_MAX_WAIT = ("CASE priority WHEN 'CRITICAL' THEN :wait_CRITICAL WHEN 'HIGH' THEN :wait_HIGH "
             "WHEN 'MEDIUM' THEN :wait_MEDIUM ELSE :wait_LOW END")


def _max_waits(max_wait_s: dict[str, float]) -> dict[str, float]:
    """The parameters _MAX_WAIT names."""
    return {f"wait_{level}": float(max_wait_s.get(level, 0.0))
            for level in ("CRITICAL", "HIGH", "MEDIUM", "LOW")}


def _only(only_ids: list[str] | None, params: dict[str, Any]) -> str:
    """The clause (and its parameter) keeping a query to `only_ids`, if given."""
    if only_ids is None:
        return ""
    params["only_ids"] = json.dumps(only_ids)
    return " AND id IN (SELECT value FROM json_each(:only_ids))"


def fallback_routes(conn: sqlite3.Connection) -> list[tuple[str | None, str | None]]:
    """The distinct (needs, on_backend) of the queued jobs that may fall back to
    the cloud: the cloud rule asks which of them no live backend can run."""
    rows = conn.execute(f"SELECT DISTINCT needs, on_backend FROM jobs WHERE {OPEN} AND "
                        "status = 'queued' AND cloud_allowed = 1 AND backend_requested != 'cloud'")
    return [(row[0], row[1]) for row in rows]


def next_cloud_fallback(conn: sqlite3.Connection, *, down_since: float,
                        max_wait_s: dict[str, float], only_ids: list[str] | None = None
                        ) -> float | None:
    """When (epoch seconds) the first queued job allowed to fall back reaches its
    max wait in the ComfyUI outage that began at `down_since`; None if none."""
    params: dict[str, Any] = {"down": down_since, **_max_waits(max_wait_s)}
    where = f"{OPEN} AND status = 'queued' AND cloud_allowed = 1"
    where += _only(only_ids, params)
    row = conn.execute(f"SELECT MIN(MAX(queued_ts, :down) + {_MAX_WAIT}) FROM jobs WHERE {where}",
                       params).fetchone()
    return row[0]


def pick_grouped(rows: list[sqlite3.Row], prefer_model: str | None, window: int) -> int:
    """Index of the job to claim: the first one using `prefer_model` within the
    head's class, unless that would pass a job already passed `window` times."""
    if not rows or prefer_model is None or window <= 0:
        return 0
    head_rank = rows[0]["rank"]
    for index, row in enumerate(rows):
        if row["rank"] != head_rank:
            return 0
        if row["model_requested"] == prefer_model:
            return index
        if row["passed_over"] >= window:
            return 0
    return 0


def run_order(conn: sqlite3.Connection, now: float, aging_s: float) -> list[Job]:
    """Queued jobs in the order workers will claim them (waiting-for-backoff last)."""
    from zmm.timestamps import iso

    rows = conn.execute(
        f"""SELECT * FROM jobs WHERE {OPEN} AND status = 'queued'
            ORDER BY (not_before IS NOT NULL AND not_before > :now_iso), {_EFFECTIVE_RANK}, seq""",
        {"now": now, "aging": max(aging_s, 1e-9), "now_iso": iso(now)},
    ).fetchall()
    return [Job.from_row(row) for row in rows]


def running(conn: sqlite3.Connection) -> list[Job]:
    rows = conn.execute(f"SELECT * FROM jobs WHERE {OPEN} AND status = 'running' "
                        "ORDER BY started_at, seq")
    return [Job.from_row(row) for row in rows]


def jobs_in_state(conn: sqlite3.Connection, state: str) -> list[Job]:
    where, params, order = status_in([state])
    rows = conn.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY {order}", params)
    return [Job.from_row(row) for row in rows]


def orphans(conn: sqlite3.Connection, comfy_url: str, worker_id: str) -> list[Job]:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE status = 'running' AND worker_id != ? AND worker_id IN "
        "(SELECT id FROM workers WHERE comfy_url = ?) ORDER BY submitted_at IS NULL, "
        "submitted_at, seq", [worker_id, comfy_url])
    return [Job.from_row(row) for row in rows]


def expired_leases(conn: sqlite3.Connection, now_iso: str) -> list[Job]:
    where, params, order = status_in(["running"])
    rows = conn.execute(f"SELECT * FROM jobs WHERE {where} AND lease_expires_at < ? "
                        f"ORDER BY {order}", [*params, now_iso])
    return [Job.from_row(row) for row in rows]


def find(conn: sqlite3.Connection, job_id: str) -> Job | None:
    """By exact id, or by a prefix that matches exactly one job."""
    job_id = job_id.strip()
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None and len(job_id) >= 8:
        rows = conn.execute(
            "SELECT * FROM jobs WHERE id >= ? AND id < ? LIMIT 2", [job_id, job_id + "\uffff"]
        ).fetchall()
        row = rows[0] if len(rows) == 1 else None
    return Job.from_row(row) if row else None


def events(conn: sqlite3.Connection, job_id: str) -> list[dict[str, Any]]:
    """A job's timeline: its `enqueued` event, kept in the job row since schema 7
    (earlier jobs have it in job_events), then every event written after it."""
    job = conn.execute("SELECT seq, created_at, enqueued_note FROM jobs WHERE id = ?",
                       [job_id]).fetchone()
    if job is None:
        return []
    timeline = []
    if job["enqueued_note"] is not None:
        timeline.append({"at": job["created_at"], "kind": "enqueued", "from": None, "to": "queued",
                         "message": job["enqueued_note"], "data": None})
    rows = conn.execute("SELECT at, kind, from_state, to_state, message, data FROM job_events "
                        "WHERE id BETWEEN ? AND ? ORDER BY id", event_rows.span(job["seq"]))
    timeline += [
        {"at": r["at"], "kind": r["kind"], "from": r["from_state"], "to": r["to_state"],
         "message": r["message"], "data": json.loads(r["data"]) if r["data"] else None}
        for r in rows
    ]
    return timeline


def recent_generation_times(conn: sqlite3.Connection, limit: int = 20) -> list[float]:
    rows = conn.execute(
        f"SELECT generation_time_s FROM jobs WHERE {DONE} AND status = 'succeeded' "
        "AND generation_time_s IS NOT NULL ORDER BY seq DESC LIMIT ?", [limit]
    ).fetchall()
    return [row[0] for row in rows]


def live_workers(conn: sqlite3.Connection, since_iso: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM workers WHERE heartbeat_at >= ? ORDER BY started_at", [since_iso]
    ).fetchall()
    return [dict(row) for row in rows]
