"""The `backends` table: what each ComfyUI backend is doing (state, GPU memory,
loaded model, last error), the model files its server has, and the operator's
drain switch; and (table `backend_nodes`) each server's node definitions.
Workers write their backend's row; `zmm backends`, `zmm top`, `zmm queue`
and the claim read it, with the jobs counted per backend name (`job_counts`).
The name is a backend's key; its URL is an attribute. Store runs these inside
its transactions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from zmm.store.queries import OPEN


@dataclass(frozen=True)
class BackendReport:
    """One heartbeat's worth of a backend's state, as its worker sees it."""

    name: str
    url: str
    gpu: int | None
    worker_id: str | None
    state: str  # up | down | starting | stopped
    managed: bool = False
    restarts: int = 0
    loaded_model: str | None = None
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    last_error: str | None = None


def report(conn: sqlite3.Connection, item: BackendReport, stamp: str) -> None:
    """Insert or refresh a backend's row; the drain switch and the file list
    are left as they are (others own them). A report without an error keeps
    the last one, so `zmm backends` can still say what went wrong."""
    conn.execute(
        "INSERT INTO backends (name, url, gpu, worker_id, state, managed, restarts, loaded_model, "
        "vram_total_bytes, vram_free_bytes, last_error, last_error_at, heartbeat_at, updated_at) "
        "VALUES (:name, :url, :gpu, :worker_id, :state, :managed, :restarts, :loaded_model, "
        ":vram_total_bytes, :vram_free_bytes, :last_error, :error_at, :stamp, :stamp) "
        "ON CONFLICT (name) DO UPDATE SET url = excluded.url, gpu = excluded.gpu, "
        "worker_id = excluded.worker_id, state = excluded.state, managed = excluded.managed, "
        "restarts = excluded.restarts, "
        "loaded_model = COALESCE(excluded.loaded_model, backends.loaded_model), "
        "vram_total_bytes = excluded.vram_total_bytes, vram_free_bytes = excluded.vram_free_bytes, "
        "last_error = COALESCE(excluded.last_error, backends.last_error), "
        "last_error_at = COALESCE(excluded.last_error_at, backends.last_error_at), "
        "heartbeat_at = excluded.heartbeat_at, updated_at = excluded.updated_at",
        {**item.__dict__, "managed": int(item.managed),
         "error_at": stamp if item.last_error else None, "stamp": stamp})


def record_files(conn: sqlite3.Connection, name: str, url: str, files: list[str],
                 stamp: str) -> None:
    """The server's model files, as sorted 'folder/name' strings."""
    conn.execute(
        "INSERT INTO backends (name, url, files, files_at, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET url = excluded.url, files = excluded.files, "
        "files_at = excluded.files_at, updated_at = excluded.updated_at",
        [name, url, json.dumps(sorted(set(files))), stamp, stamp])


def set_draining(conn: sqlite3.Connection, name: str, url: str, draining: bool,
                 stamp: str) -> None:
    conn.execute(
        "INSERT INTO backends (name, url, draining, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET draining = excluded.draining, "
        "updated_at = excluded.updated_at",
        [name, url, int(draining), stamp])


def is_draining(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT draining FROM backends WHERE name = ?", [name]).fetchone()
    return bool(row and row[0])


def rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every backend row, by name; `files` decoded to a list (None: never read)."""
    found = []
    for row in conn.execute("SELECT * FROM backends ORDER BY name"):
        item = dict(row)
        item["files"] = json.loads(item["files"]) if item["files"] else None
        item["draining"] = bool(item["draining"])
        item["managed"] = bool(item["managed"])
        found.append(item)
    return found


def job_counts(conn: sqlite3.Connection, since: str) -> dict[str, dict[str, int]]:
    """Per backend name: jobs running there now, and those that finished there
    since `since` (succeeded; failed or cancelled), by the name each job
    records (`jobs.backend_name`: its worker's backend, spool/migrations/0016)."""
    found: dict[str, dict[str, int]] = {}

    def counts(name: str) -> dict[str, int]:
        return found.setdefault(name, {"running": 0, "succeeded": 0, "failed": 0})

    for name, running in conn.execute(
            f"SELECT backend_name, COUNT(*) FROM jobs WHERE {OPEN} AND status = 'running' "
            "AND backend_name IS NOT NULL GROUP BY backend_name"):
        counts(name)["running"] = running
    for name, succeeded, failed in conn.execute(
            "SELECT backend_name, SUM(status = 'succeeded'), "
            "SUM(status IN ('failed', 'cancelled')) FROM jobs WHERE completed_at >= :since "
            "AND backend_name IS NOT NULL GROUP BY backend_name", {"since": since}):
        counts(name).update(succeeded=succeeded or 0, failed=failed or 0)
    return found


def record_node_defs(conn: sqlite3.Connection, name: str, defs: dict[str, Any],
                     stamp: str) -> bool:
    """A server's node definitions (/object_info), stored once per backend as
    gzip'd JSON; written only when they changed. True when written."""
    text = json.dumps(defs, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(text).hexdigest()
    row = conn.execute("SELECT sha256 FROM backend_nodes WHERE name = ?", [name]).fetchone()
    if row is not None and row[0] == digest:
        conn.execute("UPDATE backend_nodes SET read_at = ? WHERE name = ?", [stamp, name])
        return False
    conn.execute(
        "INSERT INTO backend_nodes (name, sha256, classes, defs, read_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, classes = excluded.classes, "
        "defs = excluded.defs, read_at = excluded.read_at",
        [name, digest, json.dumps(sorted(defs)), gzip.compress(text, 6), stamp])
    return True


def node_classes(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    """Backend name -> the node classes its server has (as last recorded)."""
    return {name: frozenset(json.loads(classes))
            for name, classes in conn.execute("SELECT name, classes FROM backend_nodes")}


def node_defs(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Backend name -> its server's node definitions (as last recorded)."""
    return {name: json.loads(gzip.decompress(blob))
            for name, blob in conn.execute("SELECT name, defs FROM backend_nodes ORDER BY name")}
