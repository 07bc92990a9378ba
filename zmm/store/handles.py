"""The handles a script holds on its jobs: the batch one command queued
(`batch_id`) and the idempotency key (`--key`), with the queueing that honours
keys: a spec whose key the spool holds returns that job instead of a new one.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from zmm.jobs import JobSpec
from zmm.store.changes import insert_job


@dataclass(frozen=True)
class Queued:
    """What one `enqueue` did: the job ids in the order of the specs, those of
    them that already existed under their key, and the batch id of the new ones
    (None when it queued fewer than two)."""

    ids: list[str]
    existing: list[str]
    batch_id: str | None


def enqueue(conn: sqlite3.Connection, specs: list[JobSpec], now: float, stamp: str) -> Queued:
    """Insert the specs whose key (if any) names no job; inside the caller's
    write transaction, so two commands with one key never both insert."""
    found = {spec.key: job_id_by_key(conn, spec.key) for spec in specs if spec.key}
    fresh = [spec for spec in specs if not (spec.key and found[spec.key])]
    batch_id = os.urandom(6).hex() if len(fresh) > 1 else None
    ids, existing = [], []
    for spec in specs:
        known = found.get(spec.key) if spec.key else None
        if known:
            ids.append(known)
            existing.append(known)
        else:
            ids.append(insert_job(conn, spec, now, stamp, batch_id))
    return Queued(ids, existing, batch_id)


def job_id_by_key(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT id FROM jobs WHERE idempotency_key = ?", [key]).fetchone()
    return row[0] if row else None


def batch_job_ids(conn: sqlite3.Connection, batch_id: str) -> list[str]:
    """The jobs of one batch, in the order they were queued (index jobs_batch)."""
    return [row[0] for row in conn.execute(
        "SELECT id FROM jobs WHERE batch_id = ? ORDER BY seq", [batch_id])]
