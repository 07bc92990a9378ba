"""Writing `job_events` rows: one place for the INSERT every state change,
swap, cloud answer, webhook try and cleanup note goes through, inside the
caller's transaction. Rows are keyed by the job's seq and the event's number
within the job (spool/migrations/0005); reads of the timeline are in
zmm.store.queries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

# The job is named by id (its seq comes from the job row) or, on the claim and
# finish paths, which hold the row already, by seq. The next number comes from
# the job's last event, found by primary key. No job row, no event.
_NEXT = "COALESCE((SELECT MAX(n) FROM job_events WHERE job_seq = {seq}), 0) + 1"
_BY_ID = f"""INSERT INTO job_events (job_seq, n, at, kind, from_state, to_state, message, data)
    SELECT seq, {_NEXT.format(seq="jobs.seq")}, ?1, ?2, ?3, ?4, ?5, ?6 FROM jobs WHERE id = ?7"""
_BY_SEQ = f"""INSERT INTO job_events (job_seq, n, at, kind, from_state, to_state, message, data)
    VALUES (?7, {_NEXT.format(seq="?7")}, ?1, ?2, ?3, ?4, ?5, ?6)"""


def write(conn: sqlite3.Connection, job_id: str, kind: str, from_state: str | None,
          to_state: str | None, message: str | None, at: str,
          data: dict[str, Any] | None = None, *, seq: int | None = None) -> None:
    """One event for the job `job_id`; pass its `seq` too when the row is at hand."""
    conn.execute(_BY_ID if seq is None else _BY_SEQ,
                 [at, kind, from_state, to_state, message,
                  json.dumps(data, separators=(",", ":")) if data else None,
                  job_id if seq is None else seq])


def write_many(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]], at: str) -> None:
    """One event per (job id, kind, message), all stamped `at`."""
    conn.executemany(_BY_ID, [(at, kind, None, None, message, None, job_id)
                              for job_id, kind, message in rows])
