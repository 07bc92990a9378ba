"""Retention SQL for `zmm cleanup` and pinning: which finished jobs hold assets
(streamed, oldest first), which paths rows still reference, and the guarded
updates that mark assets deleted, restore them, purge rows and record a
compression. Queued, running and pinned jobs are excluded in every statement,
so a job that changed state since the plan is never touched. Plain functions
over a connection: the Store (zmm.store.housekeeping) runs each write inside
its transaction and maps SQLite's errors.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from zmm.jobs import FINISHED
from zmm.store import events, outbox
from zmm.store.queries import DONE, OPEN, status_in

# Applied to every write: the row must still be finished and unpinned. The
# unary `+` keeps SQLite on the id index: through jobs_done, each batch
# of ids would scan every finished job (quadratic over a big spool).
_GUARD = f"+{DONE} AND +pinned = 0"


def _finished_only(statuses: Iterable[str]) -> list[str]:
    chosen = [status for status in statuses if status in FINISHED]
    if not chosen:  # a bug in the caller: an empty IN () would silently match nothing
        raise ValueError("retention needs at least one finished status")
    return chosen


def eligible(conn: sqlite3.Connection, statuses: Iterable[str], *,
             include_deleted: bool) -> Iterator[sqlite3.Row]:
    """Finished, unpinned jobs in `statuses` that still hold assets, oldest
    completion first, as a stream of rows (id, finished_at, output_path, outputs,
    thumbnail_path, plain_outputs, asset_deleted_at, input_file: its init image's
    copy). `include_deleted` adds rows without assets (already cleaned, or failed
    without output) for purging."""
    where, params, _ = status_in(_finished_only(statuses))
    sql = (
        "SELECT id, COALESCE(completed_at, updated_at) AS finished_at, output_path, outputs, "
        "thumbnail_path, plain_outputs, asset_deleted_at, "
        "json_extract(params, '$.init_image.file') AS input_file FROM jobs "
        f"WHERE {where} AND pinned = 0 AND (? OR (asset_deleted_at IS NULL AND "
        "(output_path IS NOT NULL OR outputs IS NOT NULL OR thumbnail_path IS NOT NULL))) "
        "ORDER BY finished_at, seq"
    )
    yield from conn.execute(sql, [*params, 1 if include_deleted else 0])


def referenced_paths(conn: sqlite3.Connection) -> Iterator[str]:
    """Every asset path any row names (outputs, thumbnails, images without
    text), streamed; rows whose assets were deleted still count, since a retried
    job writes there again."""
    for output_path, outputs, thumbnail, plains in conn.execute(
            "SELECT output_path, outputs, thumbnail_path, plain_outputs FROM jobs "
            "WHERE output_path IS NOT NULL OR outputs IS NOT NULL "
            "OR thumbnail_path IS NOT NULL"):
        if output_path:
            yield output_path
        if thumbnail:
            yield thumbnail
        for listed in (outputs, plains):
            if listed:
                try:
                    yield from (item for item in json.loads(listed) if isinstance(item, str))
                except json.JSONDecodeError:
                    continue  # a damaged list references nothing we can name


def input_paths(conn: sqlite3.Connection) -> Iterator[str]:
    """The init-image copies any row names (content-addressed, maybe shared)."""
    for (name,) in conn.execute("SELECT DISTINCT json_extract(params, '$.init_image.file') "
                                "FROM jobs WHERE json_extract(params, '$.init_image.file') "
                                "IS NOT NULL"):
        yield str(name)


def input_users(conn: sqlite3.Connection, relative: str) -> set[str]:
    """Ids of the jobs that still keep their files and name this init-image copy."""
    rows = conn.execute("SELECT id FROM jobs WHERE asset_deleted_at IS NULL AND "
                        "json_extract(params, '$.init_image.file') = ?", [relative])
    return {row[0] for row in rows}


def active_ids(conn: sqlite3.Connection) -> set[str]:
    """Ids of queued and running jobs: their files may be written right now."""
    rows = conn.execute(f"SELECT id FROM jobs WHERE {OPEN}")
    return {row[0] for row in rows}


def mark_deleted(conn: sqlite3.Connection, entries: list[tuple[str, str]],
                 stamp: str) -> set[str]:
    """Set `asset_deleted_at` on the jobs in `entries` [(id, event message)] that are
    still finished and unpinned, with an `assets_deleted` event each; returns the
    ids that passed the guard (only their files may then be deleted)."""
    if not entries:
        return set()
    messages = dict(entries)
    rows = conn.execute(
        "UPDATE jobs SET asset_deleted_at = COALESCE(asset_deleted_at, :stamp), "
        f"updated_at = :stamp WHERE id IN (SELECT value FROM json_each(:ids)) AND {_GUARD} "
        "RETURNING id", {"stamp": stamp, "ids": json.dumps(list(messages))}).fetchall()
    marked = {row[0] for row in rows}
    events.write_many(conn, [(job_id, "assets_deleted", messages[job_id]) for job_id in marked],
                      stamp)
    return marked


def restore(conn: sqlite3.Connection, entries: list[tuple[str, str]], stamp: str) -> None:
    """Undo `mark_deleted` for jobs whose files could not all be removed."""
    if not entries:
        return
    conn.executemany(
        "UPDATE jobs SET asset_deleted_at = NULL WHERE id = ? AND asset_deleted_at = ?",
        [(job_id, stamp) for job_id, _ in entries])
    events.write_many(conn, [(job_id, "assets_kept", message) for job_id, message in entries],
                      stamp)


def purge(conn: sqlite3.Connection, job_ids: list[str]) -> int:
    """Delete the rows (and their events) of jobs whose assets are marked deleted;
    the FTS delete trigger keeps the search index in step."""
    if not job_ids:
        return 0
    ids = json.dumps(job_ids)
    gone = conn.execute(
        f"DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND {_GUARD} "
        "AND asset_deleted_at IS NOT NULL RETURNING id, seq", [ids]).fetchall()
    conn.executemany("DELETE FROM job_events WHERE id BETWEEN ? AND ?",
                     [events.span(row[1]) for row in gone])
    outbox.delete_for_jobs(conn, [row[0] for row in gone])  # and their webhook deliveries
    return len(gone)


def record_compression(conn: sqlite3.Connection, job_id: str, old_outputs: str | None,
                       fields: dict[str, Any], message: str, stamp: str) -> bool:
    """Point a job at its converted files, provided its outputs are still the
    ones that were converted; False means the row changed and nothing was set."""
    allowed = {"output_path", "outputs", "file_size_bytes", "sha256"}
    if set(fields) - allowed:  # names are interpolated below
        raise ValueError(f"not a compression column: {sorted(set(fields) - allowed)}")
    assignments = ", ".join(f"{column} = :{column}" for column in fields)
    changed = conn.execute(
        f"UPDATE jobs SET {assignments}, updated_at = :_stamp WHERE id = :_id AND {_GUARD} "
        "AND asset_deleted_at IS NULL AND outputs IS :_old",
        dict(fields, _stamp=stamp, _id=job_id, _old=old_outputs)).rowcount
    if changed:
        events.write(conn, job_id, "compressed", None, None, message, stamp)
    return bool(changed)


def set_pinned(conn: sqlite3.Connection, job_id: str, pinned: bool, stamp: str) -> bool:
    """Pin or unpin one job; False when it already was in that state."""
    changed = conn.execute(
        "UPDATE jobs SET pinned = ?, updated_at = ? WHERE id = ? AND pinned = ?",
        [1 if pinned else 0, stamp, job_id, 0 if pinned else 1]).rowcount
    if changed:
        kind = "pinned" if pinned else "unpinned"
        events.write(conn, job_id, kind, None, None, f"{kind} by user: "
                     f"{'exempt from' if pinned else 'subject to'} cleanup", stamp)
    return bool(changed)
