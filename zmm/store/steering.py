"""What users ask of jobs that are not theirs to run: cancel (now, or by asking
the running job's worker), retry, and a new priority. Each outcome is decided
by a guarded UPDATE through the Store (transition/update), never by the read
before it, since workers change jobs concurrently. The one statement of its
own, a new priority's, runs inside the transaction Store.set_priority opens.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from zmm.errors import Conflict
from zmm.jobs import PRIORITY_RANK, TRANSITIONS, JobState, Priority
from zmm.store import events, queries
from zmm.store.changes import Cancellation
from zmm.store.job_row import Job
from zmm.timestamps import iso

if TYPE_CHECKING:
    from zmm.store import Store


def cancel(store: Store, job_ids: list[str]) -> list[Cancellation]:
    """Queued jobs are cancelled now; running ones get a cancel request that
    their worker carries out; finished ones are left as they are (`refused`).
    Each outcome is decided by a guarded UPDATE, never by the read before it:
    a job may be claimed, finished or requeued in between."""
    return [_cancel_one(store, store.get(job_id).id) for job_id in job_ids]


def _cancel_one(store: Store, job_id: str) -> Cancellation:
    for _ in range(5):  # each pass follows a state change another process made
        job = store.get(job_id)
        if job.status is JobState.QUEUED:
            try:
                store.transition(job_id, JobState.CANCELLED, expect=JobState.QUEUED,
                                 message="cancelled by user", error_message="cancelled by user")
                return Cancellation(job_id, "cancelled", JobState.CANCELLED)
            except Conflict:
                continue  # claimed meanwhile: ask its worker instead
        elif job.status is JobState.RUNNING:
            if store.update(job_id, cancel_requested_at=iso(store.clock()),
                            event=("cancel_requested", "cancel requested by user")):
                return Cancellation(job_id, "cancel requested", JobState.RUNNING)
        else:
            return Cancellation(job_id, f"already {job.status}", job.status)
    raise Conflict(f"job {job_id} kept changing state while being cancelled; left as it is",
                   hint="try `zmm queue cancel` again")


def cancel_all_pending(store: Store) -> list[Cancellation]:
    ids = [job.id for job in queries.jobs_in_state(store.conn, JobState.QUEUED)]
    return cancel(store, ids) if ids else []


def retry(store: Store, job_ids: list[str]) -> list[Job]:
    jobs = [store.get(job_id) for job_id in job_ids]
    for job in jobs:
        if JobState.QUEUED not in TRANSITIONS[job.status]:
            raise Conflict(f"job {job.id} is {job.status}; only failed or cancelled jobs "
                           "can be retried")
    return [
        store.transition(job.id, JobState.QUEUED, expect=job.status, kind="retry",
                         message="retried by user", retry_count=job.retry_count + 1,
                         attempts=0, error_message=None, not_before=None,
                         completed_at=None, comfy_prompt_id=None, output_path=None,
                         outputs=None, file_size_bytes=None, sha256=None,
                         thumbnail_path=None, asset_deleted_at=None, plain_outputs=None)
        for job in jobs
    ]


def failed_ids(store: Store) -> list[str]:
    return [job.id for job in queries.jobs_in_state(store.conn, JobState.FAILED)]


def reprioritize(conn: sqlite3.Connection, job: Job, level: Priority, stamp: str) -> Job:
    """Give the queued job `job` the priority `level`, with a `priority` event
    (inside the caller's transaction); Conflict when it was claimed meanwhile."""
    row = conn.execute(
        "UPDATE jobs SET priority = ?, priority_rank = ?, updated_at = ? "
        "WHERE id = ? AND status = 'queued' RETURNING *",
        [level.value, PRIORITY_RANK[level], stamp, job.id],
    ).fetchone()
    if row is None:
        raise Conflict(f"job {job.id} was claimed meanwhile; priority unchanged")
    events.write(conn, job.id, "priority", None, None, f"{job.priority} -> {level.value}", stamp)
    return Job.from_row(row)
