"""The SQL of a job's state changes: which columns a caller may set through
`Store.transition()` / `Store.update()`, the UPDATE statement for a set of
columns, and new job ids. Column names are interpolated into SQL, so only
the listed ones are accepted.
"""

from __future__ import annotations

import functools
import os
import time

# Columns a caller may set through transition()/update(); names are interpolated
# into SQL, so only these are accepted.
WRITABLE = frozenset(
    """backend model_used generation_time_s vram_used_gb cost_usd output_path outputs
    output_url file_size_bytes sha256 thumbnail_path started_at completed_at error_message
    attempts retry_count not_before worker_id lease_expires_at comfy_prompt_id comfy_url
    submitted_at phase phase_detail progress_value progress_max progress_node progress_at
    cancel_requested_at seed width height steps params model_requested priority
    priority_rank queued_at queued_ts pinned asset_deleted_at workflow cloud_allowed""".split()
)


@functools.lru_cache(maxsize=256)  # a handful of shapes, each run on every state change
def update_sql(columns: tuple[str, ...], guard: str, by_worker: bool, returning: str = "") -> str:
    """`UPDATE jobs SET <columns> WHERE <guard>`, each column bound by name."""
    unknown = set(columns) - WRITABLE - {"status", "updated_at"}
    if unknown:  # a bug in zmm, not bad input
        raise ValueError(f"unknown job columns: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    if by_worker:
        guard += " AND worker_id = :_worker"
    return f"UPDATE jobs SET {assignments} WHERE {guard}{returning}"


def new_job_id(now: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"mmg-{stamp}-{os.urandom(4).hex()}"
