"""Writing `job_events` rows: one place for the INSERT every state change,
swap, cloud answer, webhook try and cleanup note goes through, inside the
caller's transaction. A row's id is its job's seq times 2**20 plus the event's
number within the job (spool/migrations/0007), so a job's events are the id
range `span(seq)`; reads of the timeline are in zmm.store.queries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from zmm.jsontext import compact

SHIFT = 20  # up to 2**20 - 1 events per job; the table's CHECK refuses more


def span(seq: int) -> tuple[int, int]:
    """The first and last event id a job with this seq can have."""
    return (seq << SHIFT) + 1, (seq << SHIFT) + (1 << SHIFT) - 1


# The job is named by id (its seq comes from the job row) or, on the claim and
# finish paths, which hold the row already, by seq. The next id follows the job's
# last event, found by primary key. No job row, no event.
_NEXT = (f"COALESCE((SELECT MAX(id) FROM job_events WHERE id BETWEEN ({{seq}} << {SHIFT}) "
         f"AND ({{seq}} << {SHIFT}) + {(1 << SHIFT) - 1}), {{seq}} << {SHIFT}) + 1")
_BY_ID = f"""INSERT INTO job_events (id, at, kind, from_state, to_state, message, data)
    SELECT {_NEXT.format(seq="jobs.seq")}, ?1, ?2, ?3, ?4, ?5, ?6 FROM jobs WHERE id = ?7"""
_BY_SEQ = f"""INSERT INTO job_events (id, at, kind, from_state, to_state, message, data)
    VALUES ({_NEXT.format(seq="?7")}, ?1, ?2, ?3, ?4, ?5, ?6)"""


def write(conn: sqlite3.Connection, job_id: str, kind: str, from_state: str | None,
          to_state: str | None, message: str | None, at: str,
          data: dict[str, Any] | None = None, *, seq: int | None = None) -> None:
    """One event for the job `job_id`; pass its `seq` too when the row is at hand."""
    conn.execute(_BY_ID if seq is None else _BY_SEQ,
                 [at, kind, from_state, to_state, message,
                  compact(data) if data else None,
                  job_id if seq is None else seq])


def write_many(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]], at: str) -> None:
    """One event per (job id, kind, message), all stamped `at`."""
    conn.executemany(_BY_ID, [(at, kind, None, None, message, None, job_id)
                              for job_id, kind, message in rows])
