"""The spool: the only code that writes SQL. Every state change is a guarded
UPDATE (it names the state it expects) plus a `job_events` row, in one
IMMEDIATE transaction, so concurrent processes can never move a job twice.

The SQL is split by concern: reads in `queries`, claiming in `claims`, the
INSERT and UPDATE statements of jobs in `changes`, event rows in `events`,
cleanup in `retention` and the webhook outbox in `outbox` (their Store
methods in `housekeeping`), the live workers in
`workers`, the backends in `backends`, users' cancel/retry/priority in `steering`,
what `zmm top` shows in `board`, the schema check in `schema`, batches and idempotency
keys in `handles`; a row is a `Job` (`job_row`); the API tokens of `zmm serve` in `tokens`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmm.errors import Conflict, NotFound
from zmm.jobs import JOB_ID_EXAMPLE, JobSpec, JobState, Priority, check_transition, new_job_id
from zmm.jsontext import compact
from zmm.liveness import live_since
from zmm.store import backends, claims, events, handles, outbox, queries, steering, workers
from zmm.store.changes import Cancellation, insert_composed, update_sql
from zmm.store.db import (
    connect,
    connect_read_only,
    errors_mapped,
    snapshot,
    transaction,
    translate_errors,
)
from zmm.store.handles import Queued
from zmm.store.housekeeping import Housekeeping
from zmm.store.job_row import Job
from zmm.store.queries import Route
from zmm.store.tokens import Tokens
from zmm.timestamps import iso

if TYPE_CHECKING:
    from zmm.store.board import Board
    from zmm.store.history import HistoryFilter
    from zmm.store.stats import Report

BackendReport = backends.BackendReport

__all__ = ["BackendReport", "Board", "Cancellation", "HistoryFilter", "Job", "Queued", "Report",
           "Route", "Store", "shared_batch"]


def __getattr__(name: str) -> Any:
    """The read models of `zmm history`, `zmm stats` and `zmm top`, loaded when asked."""
    if name == "HistoryFilter":
        from zmm.store.history import HistoryFilter
        return HistoryFilter
    if name == "Board":
        from zmm.store.board import Board
        return Board
    if name == "Report":
        from zmm.store.stats import Report
        return Report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def shared_batch(jobs: Iterable[Job]) -> str | None:
    """The batch id the jobs share, or None (a single job, or several batches)."""
    batches = {job.batch_id for job in jobs}
    return next(iter(batches)) if len(batches) == 1 else None


@errors_mapped
class Store(Housekeeping, Tokens):
    def __init__(self, path: Path, *, busy_timeout_ms: int = 15000,
                 clock: Callable[[], float] = time.time, assets_root: Path | None = None,
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self.clock = clock
        # Job files are stored relative to this; $ZMM_HOME keeps the spool and
        # the assets folder side by side (zmm.config.Config.assets_dir).
        self.assets_root = Path(assets_root) if assets_root else self.path.parent / "assets"
        # read_only: for commands that only read (works on a full disk, a read-only spool)
        opener = connect_read_only if read_only else connect
        self.conn = opener(self.path, busy_timeout_ms=busy_timeout_ms)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def data_version(self) -> int:
        """A number that changes whenever another connection (any process) has
        committed to the spool since this one last asked; this connection's own
        commits leave it alone. Costs microseconds: no table is read."""
        with translate_errors(self.path):
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- enqueue -----------------------------------------------------------

    def enqueue(self, specs: list[JobSpec]) -> list[Job]:
        """Write every spec as a queued job in one transaction: all or nothing."""
        return self.get_many(self.submit(specs).ids)

    def submit(self, specs: list[JobSpec]) -> Queued:
        """`enqueue`, telling which jobs already existed under their key
        (zmm.store.handles) and the new jobs' batch id."""
        now = self.clock()
        with translate_errors(self.path), transaction(self.conn) as conn:
            return handles.enqueue(conn, specs, now, iso(now))

    def batch_job_ids(self, batch_id: str) -> list[str]:
        """The jobs one command queued together (`--from`, `--count`), oldest first;
        NotFound when the spool holds none."""
        with translate_errors(self.path):
            ids = handles.batch_job_ids(self.conn, batch_id.strip())
        if not ids:
            raise NotFound(f"no batch {batch_id!r} in the spool",
                           hint="`zmm generate --no-wait` prints the batch id; "
                           "`zmm history --json` shows each job's batch_id")
        return ids

    def new_job_id(self) -> str:
        return new_job_id(self.clock())

    def add_composed(self, job_id: str, source_id: str, params: dict[str, Any],
                     fields: dict[str, Any], message: str) -> Job:
        """Record a job `zmm compose` made from `source_id`'s image, succeeded at
        once (its files, named after `job_id`, are already saved)."""
        now = self.clock()
        stamp = iso(now)
        with translate_errors(self.path), transaction(self.conn) as conn:
            source = conn.execute("SELECT * FROM jobs WHERE id = ?", [source_id]).fetchone()
            if source is None:
                raise NotFound(f"no job {source_id!r} in the spool (purged meanwhile?)")
            insert_composed(conn, job_id, source, compact(params), fields, stamp, now)
            events.write(conn, job_id, "composed", None, JobState.SUCCEEDED.value, message,
                         stamp, {"source_job_id": source_id})
        return self.get(job_id)

    # -- claiming and leases -------------------------------------------------

    def claim(self, worker_id: str, *, lease_s: float, aging_s: float,
              min_rank: int | None = None, only_ids: list[str] | None = None,
              prefer_model: str | None = None, group_window: int = 0,
              route: Route | None = None, backend: str | None = None) -> Job | None:
        """Take the next runnable job: priority with aging, FIFO inside a class, but
        preferring the checkpoint already loaded within `group_window` places.
        With `route` (a worker's backend and its server's files), only a job
        that backend can run; None: any job (no routing). The job records the
        name of the backend that holds it: `backend`, else the route's."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            row = claims.take_next(conn, worker_id, self.clock(), lease_s=lease_s,
                                   aging_s=aging_s, min_rank=min_rank, only_ids=only_ids,
                                   prefer_model=prefer_model, group_window=group_window,
                                   route=route, backend_name=backend)
        return Job.from_row(row) if row is not None else None  # outside the write lock

    def claim_for_cloud(self, worker_id: str, *, lease_s: float, down_since: float | None,
                        max_wait_s: dict[str, float], only_ids: list[str] | None = None,
                        stranded: list[tuple[str | None, str | None]] | None = None
                        ) -> Job | None:
        """Take the next job a cloud provider may run now (see queries.cloud_query);
        `stranded`: the (needs, on_backend) no live backend can run."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            row = claims.take_for_cloud(conn, worker_id, self.clock(), lease_s=lease_s,
                                        down_since=down_since, max_wait_s=max_wait_s,
                                        only_ids=only_ids,
                                        stranded=json.dumps(stranded) if stranded else None)
        return Job.from_row(row) if row is not None else None

    def fallback_routes(self) -> list[tuple[str | None, str | None]]:
        return queries.fallback_routes(self.conn)

    def heartbeat(self, worker_id: str, job_ids: Iterable[str], *, lease_s: float) -> None:
        ids = list(job_ids)
        if not ids:
            return
        now = self.clock()
        marks = ",".join("?" * len(ids))
        with translate_errors(self.path), transaction(self.conn) as conn:
            conn.execute(
                f"UPDATE jobs SET lease_expires_at = ? WHERE status = 'running' "
                f"AND worker_id = ? AND id IN ({marks})",
                [iso(now + lease_s), worker_id, *ids],
            )

    def expired_leases(self) -> list[Job]:
        return queries.expired_leases(self.conn, iso(self.clock()))

    def orphans(self, comfy_url: str, worker_id: str) -> list[Job]:
        """Running jobs held by other workers registered for `comfy_url`: dead ones,
        when the caller holds that URL's worker lock. First submitted first."""
        return queries.orphans(self.conn, comfy_url, worker_id)

    def adopt(self, job_id: str, worker_id: str, *, lease_s: float, reason: str,
              owner: str | None = None, backend: str | None = None) -> Job | None:
        """Take over a running job whose worker died: known dead (`owner`, the worker
        id it must still have), or presumed dead because its lease expired.
        `backend`: the name of the adopting worker's backend, which the job records."""
        now = self.clock()
        guard, value = ("worker_id = ?", owner) if owner is not None else (
            "lease_expires_at < ?", iso(now))
        with translate_errors(self.path), transaction(self.conn) as conn:
            row = conn.execute(
                f"""UPDATE jobs SET worker_id = ?, lease_expires_at = ?, updated_at = ?,
                    backend_name = COALESCE(?, backend_name)
                    WHERE id = ? AND status = 'running' AND {guard} RETURNING *""",
                [worker_id, iso(now + lease_s), iso(now), backend, job_id, value],
            ).fetchone()
            if row is None:
                return None
            events.write(conn, job_id, "adopted", "running", "running", reason, iso(now))
            return Job.from_row(row)

    # -- state changes -------------------------------------------------------

    def transition(self, job_id: str, target: JobState, *, expect: JobState,
                   worker_id: str | None = None, kind: str | None = None,
                   message: str | None = None, data: dict[str, Any] | None = None,
                   **fields: Any) -> Job:
        """Move a job from `expect` to `target`, setting `fields`, with an event."""
        check_transition(job_id, expect, target)
        now = self.clock()
        values = dict(fields, status=target.value, updated_at=iso(now))
        if target is JobState.QUEUED:
            values.update(queued_at=iso(now), queued_ts=now, worker_id=None,
                          lease_expires_at=None, phase="queued", cancel_requested_at=None,
                          error_kind=None)
        elif target.finished:
            values.setdefault("completed_at", iso(now))
            values.update(lease_expires_at=None, phase="done")
            if target is not JobState.FAILED:  # a failure names its kind (worker/outcomes.py)
                values["error_kind"] = "cancelled" if target is JobState.CANCELLED else None
        sql = update_sql(tuple(values), "id = :_id AND status = :_expect",
                          worker_id is not None, " RETURNING *")
        params = dict(values, _id=job_id, _expect=expect.value, _worker=worker_id)
        with translate_errors(self.path), transaction(self.conn) as conn:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                current = self._current_state(conn, job_id)
                raise Conflict(f"job {job_id} is {current}, not {expect.value}; left unchanged")
            events.write(conn, job_id, kind or target.value, expect.value, target.value,
                         message, iso(now), data, seq=row["seq"])
            if target.finished and row["webhook_url"]:
                # Committed with the state change, or not at all.
                outbox.add(conn, Job.from_row(row), iso(now), self.assets_root)
        return Job.from_row(row)  # built once the write lock, which others wait for, is free

    def update(self, job_id: str, *, worker_id: str | None = None,
               event: tuple[str, str] | None = None, data: dict[str, Any] | None = None,
               **fields: Any) -> bool:
        """Set fields of a running job without changing its state (progress, phase,
        submission). Returns False if the job is no longer this worker's."""
        now = self.clock()
        values = dict(fields, updated_at=iso(now))
        sql = update_sql(tuple(values), "id = :_id AND status = 'running'", worker_id is not None)
        params = dict(values, _id=job_id, _worker=worker_id)
        with translate_errors(self.path), transaction(self.conn) as conn:
            changed = conn.execute(sql, params).rowcount
            if changed and event:
                events.write(conn, job_id, event[0], None, None, event[1], iso(now), data)
        return bool(changed)

    def add_event(self, job_id: str, kind: str, message: str,
                  data: dict[str, Any] | None = None) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            events.write(conn, job_id, kind, None, None, message, iso(self.clock()), data)

    def cancel(self, job_ids: list[str]) -> list[Cancellation]:
        """Queued jobs are cancelled now; running ones get a cancel request that
        their worker carries out; finished ones are left as they are (`refused`)."""
        return steering.cancel(self, job_ids)

    def cancel_all_pending(self) -> list[Cancellation]:
        return steering.cancel_all_pending(self)

    def retry(self, job_ids: list[str]) -> list[Job]:
        return steering.retry(self, job_ids)

    def failed_ids(self) -> list[str]:
        return steering.failed_ids(self)

    def set_priority(self, job_id: str, level: Priority) -> Job:
        job = self.get(job_id)
        if job.status is not JobState.QUEUED:
            raise Conflict(f"job {job.id} is {job.status}; only queued jobs can change priority")
        with translate_errors(self.path), transaction(self.conn) as conn:
            return steering.reprioritize(conn, job, level, iso(self.clock()))

    # -- spool-wide state ----------------------------------------------------

    def set_state(self, key: str, value: Any) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            conn.execute(
                "INSERT INTO spool_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [key, json.dumps(value), iso(self.clock())],
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM spool_state WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def is_paused(self) -> bool:
        return queries.paused(self.conn)

    def register_worker(self, worker_id: str, comfy_url: str | None, state: str, *,
                        backend: str | None = None) -> None:
        """A worker's row (`backend`: the backend it serves; kept when not given)."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            workers.register(conn, worker_id, comfy_url, state, iso(self.clock()),
                             backend=backend)

    def unregister_worker(self, worker_id: str) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            workers.unregister(conn, worker_id)

    def forget_other_workers(self, comfy_url: str, worker_id: str) -> int:
        """Drop the rows of every other worker registered for `comfy_url`: dead,
        when the caller holds that URL's worker lock (killed ones leave theirs)."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            return workers.forget_others(conn, comfy_url, worker_id)

    # -- reads ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = queries.find(self.conn, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} in the spool",
                           hint=f"`zmm history` lists jobs; ids look like {JOB_ID_EXAMPLE}")
        return job

    def get_many(self, job_ids: list[str]) -> list[Job]:
        return [self.get(job_id) for job_id in job_ids]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return queries.events(self.conn, job_id)

    def next_runnable(self, aging_s: float, *, min_rank: int | None = None,
                      only_ids: list[str] | None = None,
                      route: Route | None = None) -> str | None:
        """The id of the job a worker would claim now (`min_rank=0`: CRITICAL only)."""
        return queries.next_runnable(self.conn, self.clock(), aging_s, min_rank=min_rank,
                                     only_ids=only_ids, route=route)

    def next_cloud_fallback(self, *, down_since: float, max_wait_s: dict[str, float],
                            only_ids: list[str] | None = None) -> float | None:
        return queries.next_cloud_fallback(self.conn, down_since=down_since,
                                           max_wait_s=max_wait_s, only_ids=only_ids)

    def run_order(self, aging_s: float) -> list[Job]:
        return queries.run_order(self.conn, self.clock(), aging_s)

    def running(self) -> list[Job]:
        return queries.running(self.conn)

    def recent_generation_times(self) -> list[float]:
        return queries.recent_generation_times(self.conn)

    # -- backends --------------------------------------------------------------

    def report_backend(self, item: backends.BackendReport) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            backends.report(conn, item, iso(self.clock()))

    def record_backend_files(self, name: str, url: str, files: list[str],
                             node_defs: dict[str, Any] | None = None) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            backends.record_files(conn, name, url, files, iso(self.clock()))
            if node_defs is not None:
                backends.record_node_defs(conn, name, node_defs, iso(self.clock()))

    def backend_nodes(self, *, defs: bool = False) -> dict[str, Any]:
        """Backend name -> its server's node classes (`defs`: definitions)."""
        with translate_errors(self.path):
            return (backends.node_defs if defs else backends.node_classes)(self.conn)

    def set_draining(self, name: str, url: str, draining: bool) -> None:
        with translate_errors(self.path), transaction(self.conn) as conn:
            backends.set_draining(conn, name, url, draining, iso(self.clock()))

    def is_draining(self, name: str) -> bool:
        with translate_errors(self.path):
            return backends.is_draining(self.conn, name)

    def backends(self) -> list[dict[str, Any]]:
        with translate_errors(self.path):
            return backends.rows(self.conn)

    def backend_job_counts(self, since: float) -> dict[str, dict[str, int]]:
        """Per ComfyUI URL: jobs running, and succeeded / failed since `since`."""
        with translate_errors(self.path):
            return backends.job_counts(self.conn, iso(since))

    def live_workers(self, lease_s: float) -> list[dict[str, Any]]:
        """The workers live now: heartbeat within zmm.liveness.LIVE_LEASES leases."""
        with translate_errors(self.path):
            return queries.live_workers(self.conn, iso(live_since(self.clock(), lease_s)))

    # `zmm history`, `zmm stats` and `zmm top` load their SQL only when they run.

    def board(self, *, aging_s: float, lease_s: float, head: int = 10,
              failures: int = 5, window_s: float = 3600.0) -> Board:
        """What `zmm top` shows, in one snapshot (zmm.store.board); its workers
        are the live ones, as `live_workers(lease_s)` finds them."""
        from zmm.store import board

        now = self.clock()
        with translate_errors(self.path), snapshot(self.conn) as conn:
            return board.read(conn, now, aging_s=aging_s,
                              worker_since=live_since(now, lease_s), head=head,
                              failures=failures, window_s=window_s)

    def history_page(self, flt: HistoryFilter) -> tuple[list[Job], int]:
        from zmm.store import history

        with translate_errors(self.path):
            return history.page(self.conn, flt)

    def history_cost(self, flt: HistoryFilter) -> float:
        from zmm.store import history

        with translate_errors(self.path):
            return history.cost(self.conn, flt)

    def stats_report(self, since: float | None, until: float) -> Report:
        from zmm.store import stats

        with translate_errors(self.path), snapshot(self.conn) as conn:
            return stats.report(conn, since, until)

    # -- internals -------------------------------------------------------------

    @staticmethod
    def _current_state(conn: sqlite3.Connection, job_id: str) -> str:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
        return row[0] if row else "missing"
