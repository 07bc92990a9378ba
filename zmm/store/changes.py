"""The SQL of a job's state changes: which columns a caller may set through
`Store.transition()` / `Store.update()`, the UPDATE statement for a set of
columns, and the INSERT of a new job with its id. Column names are
interpolated into SQL, so only the listed ones are accepted.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass

from zmm.errors import Conflict
from zmm.jobs import JobSpec, JobState, new_job_id
from zmm.jsontext import compact
from zmm.store.db import refused_value

# Columns a caller may set through transition()/update(); names are interpolated
# into SQL, so only these are accepted. `params` is not one: it is written once,
# when the job is queued, and a worker's decisions have columns of their own.
WRITABLE = frozenset(
    """backend model_used generation_time_s vram_used_gb cost_usd output_path outputs
    output_url file_size_bytes sha256 thumbnail_path started_at completed_at error_message
    attempts retry_count not_before worker_id lease_expires_at comfy_prompt_id comfy_url
    submitted_at phase phase_detail progress_value progress_max progress_node progress_at
    cancel_requested_at seed width height steps model_requested priority
    priority_rank queued_at queued_ts pinned asset_deleted_at workflow cloud_allowed
    plain_outputs enhanced_prompt needs error_kind oom_retried enhance_skipped vram_wait_ts
    downgraded_from""".split()
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


def insert_job(conn: sqlite3.Connection, spec: JobSpec, now: float, stamp: str,
               batch_id: str | None) -> str:
    """INSERT one queued job; a clash of ids is retried, any other refusal is
    InvalidInput naming the column."""
    params = spec.stored_params()
    row = {
        "request_type": "image", "status": JobState.QUEUED.value,
        "priority": spec.priority.value, "priority_rank": spec.priority.rank,
        "prompt": spec.user_prompt or spec.prompt, "negative_prompt": spec.negative_prompt,
        "requester": spec.requester, "quality_tier": spec.quality_tier, "style": spec.style,
        "workflow": spec.workflow, "model_requested": spec.model_requested,
        "params": compact(params), "seed": spec.seed,
        "width": spec.width, "height": spec.height, "steps": spec.steps,
        "webhook_url": spec.webhook_url, "batch_id": batch_id, "created_at": stamp,
        "backend_requested": spec.backend_requested, "cloud_allowed": int(spec.cloud_allowed),
        "on_backend": spec.on_backend, "needs": compact(spec.needs),
        "queued_at": stamp, "queued_ts": now, "updated_at": stamp, "phase": "queued",
        # The `enqueued` event, kept in the row (spool/migrations/0007).
        "enqueued_note": f"{spec.priority.value} {spec.quality_tier} {spec.width}x{spec.height}",
        "enhanced_prompt": spec.enhanced_prompt,  # one made already (--from-image)
        "name": spec.name, "idempotency_key": spec.key,
    }
    columns = ", ".join(row)
    marks = ", ".join(f":{key}" for key in row)
    for _ in range(5):  # a clash needs the same second and the same 32 random bits
        job_id = row["id"] = new_job_id(now)
        try:
            conn.execute(f"INSERT INTO jobs (id, {columns}) VALUES (:id, {marks})", row)
            return job_id
        except sqlite3.IntegrityError as exc:
            if str(exc) != "UNIQUE constraint failed: jobs.id":
                raise refused_value(exc) from None
    raise Conflict("could not allocate a unique job id in five tries",
                   hint="job ids carry 32 random bits; try again")


@dataclass(frozen=True)
class Cancellation:
    """What `Store.cancel` did to one job: `result` is "cancelled", "cancel
    requested" (its worker carries it out) or "already <state>" (it had finished:
    a conflict); `status` is the job's state afterwards."""

    id: str
    result: str
    status: JobState

    @property
    def refused(self) -> bool:
        return self.result.startswith("already ")


# The columns a composed job takes over from the job whose image it composed again.
_FROM_SOURCE = ("request_type", "priority", "priority_rank", "prompt", "negative_prompt",
                "requester", "quality_tier", "style", "workflow", "model_requested", "seed",
                "steps", "backend_requested", "model_used")
_COMPOSED = frozenset({"output_path", "outputs", "plain_outputs", "file_size_bytes", "sha256",
                       "width", "height", "thumbnail_path", "generation_time_s"})


def insert_composed(conn: sqlite3.Connection, job_id: str, source: sqlite3.Row, params: str,
                    fields: dict[str, object], stamp: str, now: float) -> None:
    """INSERT a job that `zmm compose` finished at once: `source`'s request,
    the new `params` and the saved files' `fields`, succeeded."""
    unknown = set(fields) - _COMPOSED
    if unknown:  # a bug in zmm: names are interpolated below
        raise ValueError(f"not a composed job's column: {sorted(unknown)}")
    row = {key: source[key] for key in _FROM_SOURCE}
    row.update(fields, id=job_id, params=params, status=JobState.SUCCEEDED.value,
               backend="compose", cost_usd=0.0, source_job_id=source["id"], created_at=stamp,
               queued_at=stamp, queued_ts=now, started_at=stamp, completed_at=stamp,
               updated_at=stamp, phase="done", cloud_allowed=0)
    columns = ", ".join(row)
    marks = ", ".join(f":{key}" for key in row)
    try:
        conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", row)
    except sqlite3.IntegrityError as exc:
        if str(exc) == "UNIQUE constraint failed: jobs.id":
            raise Conflict(f"job id {job_id} is taken", hint="run `zmm compose` again") from None
        raise refused_value(exc) from None
