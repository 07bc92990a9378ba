"""The `workers` table: which workers are alive, for which ComfyUI, and their
last heartbeat (what `zmm queue` lists and `zmm wait` asks). Writes only;
`queries.live_workers` reads it. Store runs these inside its transactions.
"""

from __future__ import annotations

import os
import sqlite3


def register(conn: sqlite3.Connection, worker_id: str, comfy_url: str | None, state: str,
             stamp: str, backend: str | None = None) -> None:
    """A new worker's row, or a known one's heartbeat and state (and its backend,
    when given: the heartbeats leave it as it is)."""
    host = os.uname().nodename if hasattr(os, "uname") else ""
    conn.execute(
        "INSERT INTO workers (id, pid, host, comfy_url, started_at, heartbeat_at, state, backend) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "heartbeat_at = excluded.heartbeat_at, state = excluded.state, "
        "backend = COALESCE(excluded.backend, workers.backend)",
        [worker_id, os.getpid(), host, comfy_url, stamp, stamp, state, backend])


def unregister(conn: sqlite3.Connection, worker_id: str) -> None:
    conn.execute("DELETE FROM workers WHERE id = ?", [worker_id])


def forget_others(conn: sqlite3.Connection, comfy_url: str, worker_id: str) -> int:
    return conn.execute("DELETE FROM workers WHERE comfy_url = ? AND id != ?",
                        [comfy_url, worker_id]).rowcount
