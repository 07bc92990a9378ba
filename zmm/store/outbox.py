"""The webhook outbox's SQL: a delivery row written in the transaction that
finishes a job, and how senders claim, record and finish deliveries.

Claims are leases (like jobs'), so two processes never send one delivery at
once and a sender that dies leaves it to the next. Nothing here sends HTTP.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

from zmm.store.queries import Job

EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}


def body_for(job: Job, event: str, delivery_id: str) -> str:
    """The JSON a receiver gets: stable keys, the job as `--json` shows it."""
    return json.dumps({"event": event, "delivery_id": delivery_id, "job": job.public()},
                      separators=(",", ":"), sort_keys=True)


def add(conn: sqlite3.Connection, job: Job, stamp: str) -> str:
    """Queue the delivery of a just-finished job (inside the caller's transaction)."""
    event = EVENTS[job.status]
    delivery_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO webhook_deliveries (delivery_id, job_id, url, event, body, next_try_at, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [delivery_id, job.id, job.webhook_url, event, body_for(job, event, delivery_id), stamp,
         stamp])
    return delivery_id
