"""Writing `job_events` rows: one place for the INSERT every state change,
swap, cloud answer and webhook try goes through, inside the caller's
transaction. Reads of the timeline are in zmm.store.queries."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def write(conn: sqlite3.Connection, job_id: str, kind: str, from_state: str | None,
          to_state: str | None, message: str | None, at: str,
          data: dict[str, Any] | None = None) -> None:
    conn.execute(
        "INSERT INTO job_events (job_id, at, kind, from_state, to_state, message, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [job_id, at, kind, from_state, to_state, message,
         json.dumps(data, separators=(",", ":")) if data else None])
