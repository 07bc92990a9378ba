"""The webhook outbox's SQL: a delivery row written in the transaction that
finishes a job, and how senders claim, record and finish deliveries.

Claims are leases (like jobs'), so two processes never send one delivery at
once and a sender that dies leaves it to the next. Every recorded try writes
a `webhook` job event in the same transaction. Nothing here sends HTTP.
Plain functions over a connection: the Store (zmm.store.housekeeping) runs
the writes inside its transaction and maps SQLite's errors.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from zmm.jsontext import compact
from zmm.store import events
from zmm.store.job_row import Job

EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}


def body_for(job: Job, event: str, delivery_id: str, assets_root: Path) -> str:
    """The JSON a receiver gets: stable keys, the job as `--json` shows it
    (its files also as absolute paths under `assets_root`)."""
    return compact({"event": event, "delivery_id": delivery_id,
                    "job": job.public(assets_root)}, sort_keys=True)


def add(conn: sqlite3.Connection, job: Job, stamp: str, assets_root: Path) -> str:
    """Queue the delivery of a just-finished job (inside the caller's transaction)."""
    event = EVENTS[job.status]
    delivery_id = os.urandom(16).hex()  # not uuid: its import costs every `zmm` start
    conn.execute(
        "INSERT INTO webhook_deliveries (delivery_id, job_id, url, event, body, next_try_at, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [delivery_id, job.id, job.webhook_url, event,
         body_for(job, event, delivery_id, assets_root), stamp, stamp])
    return delivery_id


# Backend alerts share the outbox (its signing, retries and leases) without a
# job: their job_id column holds this prefix and the backend's URL, a name no
# job id can take, so their tries write no job event (there is no job row).
ALERT_PREFIX = "backend:"


def add_alert(conn: sqlite3.Connection, url: str, event: str, backend: dict[str, object],
              stamp: str) -> str:
    """Queue a backend alert (`backend.down` / `backend.up`) to `url` about the
    backend `backend["url"]` (inside the caller's transaction)."""
    delivery_id = os.urandom(16).hex()
    body = compact({"event": event, "delivery_id": delivery_id, "backend": backend,
                    "at": stamp}, sort_keys=True)
    conn.execute(
        "INSERT INTO webhook_deliveries (delivery_id, job_id, url, event, body, next_try_at, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [delivery_id, ALERT_PREFIX + str(backend["url"]), url, event, body, stamp, stamp])
    return delivery_id


@dataclass(frozen=True)
class Delivery:
    """One row of `webhook_deliveries` (see spool/migrations/0004_cloud_webhooks.sql)."""

    id: int
    delivery_id: str
    job_id: str
    url: str
    event: str
    body: str
    status: str  # pending | delivered | failed
    tries: int
    next_try_at: str
    claimed_by: str | None
    claim_expires_at: str | None
    last_error: str | None
    created_at: str
    finished_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Delivery:
        return cls(**{key: row[key] for key in row.keys()})


# Due and not held by a live claim. The partial index webhook_deliveries_due
# (next_try_at WHERE status = 'pending') serves both the peek and the claim.
_DUE = ("status = 'pending' AND next_try_at <= :now "
        "AND (claim_expires_at IS NULL OR claim_expires_at < :now)")


def next_due(conn: sqlite3.Connection, now: str) -> str | None:
    """When the earliest unclaimed pending delivery is due (maybe already), or
    None: the sender's cheap poll, a read that takes no write lock."""
    row = conn.execute(
        "SELECT next_try_at FROM webhook_deliveries WHERE status = 'pending' "
        "AND (claim_expires_at IS NULL OR claim_expires_at < ?) "
        "ORDER BY next_try_at LIMIT 1", [now]).fetchone()
    return row[0] if row else None


def claim(conn: sqlite3.Connection, claimer: str, now: str, until: str, *,
          limit: int = 1, job_ids: list[str] | None = None,
          exclude: list[int] | None = None) -> list[Delivery]:
    """Lease up to `limit` due deliveries to `claimer` until `until`, earliest
    first, in one statement: two senders never hold the same row. `job_ids`
    narrows to those jobs; `exclude` skips rows (by `id`) already tried."""
    pick = f"SELECT id FROM webhook_deliveries WHERE {_DUE}"
    params: dict[str, object] = {"now": now, "claimer": claimer, "until": until,
                                 "limit": limit}
    if job_ids is not None:
        pick += " AND job_id IN (SELECT value FROM json_each(:ids))"
        params["ids"] = json.dumps(job_ids)
    if exclude:
        pick += " AND id NOT IN (SELECT value FROM json_each(:exclude))"
        params["exclude"] = json.dumps(exclude)
    pick += " ORDER BY next_try_at, id LIMIT :limit"
    rows = conn.execute(
        "UPDATE webhook_deliveries SET claimed_by = :claimer, claim_expires_at = :until "
        f"WHERE id IN ({pick}) RETURNING *", params).fetchall()
    return sorted((Delivery.from_row(row) for row in rows), key=lambda d: (d.next_try_at, d.id))


def record_try(conn: sqlite3.Connection, delivery: Delivery, claimer: str, *,
               status: str, last_error: str | None, next_try_at: str | None, stamp: str,
               message: str, data: dict[str, object]) -> bool:
    """Count one try of a claimed delivery and release the claim: `status`
    pending (with `next_try_at`), delivered or failed (with `finished_at`), plus
    a `webhook` event for its job, in one transaction. False (and nothing
    written) when the claim was lost to another sender after it expired."""
    if status not in ("pending", "delivered", "failed"):
        raise ValueError(f"not a delivery status: {status!r}")
    changed = conn.execute(
        "UPDATE webhook_deliveries SET tries = tries + 1, status = :status, "
        "last_error = :error, next_try_at = COALESCE(:next, next_try_at), "
        "claimed_by = NULL, claim_expires_at = NULL, "
        "finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE :stamp END "
        "WHERE id = :id AND status = 'pending' AND claimed_by = :claimer",
        {"status": status, "error": last_error, "next": next_try_at, "stamp": stamp,
         "id": delivery.id, "claimer": claimer}).rowcount
    if changed:
        events.write(conn, delivery.job_id, "webhook", None, None, message, stamp, data)
    return bool(changed)


def for_job(conn: sqlite3.Connection, job_id: str) -> list[Delivery]:
    """A job's deliveries, oldest first (a retried job can have several)."""
    rows = conn.execute("SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY id",
                        [job_id]).fetchall()
    return [Delivery.from_row(row) for row in rows]


def delete_for_jobs(conn: sqlite3.Connection, job_ids: list[str]) -> int:
    """Drop the deliveries of `job_ids` (inside the caller's transaction)."""
    return conn.execute(
        "DELETE FROM webhook_deliveries WHERE job_id IN (SELECT value FROM json_each(?))",
        [json.dumps(job_ids)]).rowcount
