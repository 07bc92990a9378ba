"""The Store's methods for housekeeping: cleanup and pinning (SQL in
zmm.store.retention) and the webhook outbox (SQL in zmm.store.outbox; sending
in zmm.worker.webhooks). A part of zmm.store.Store, split off to keep the
façade readable; it uses the Store's connection, path and clock. As in the
Store, each method opens the transaction its SQL runs in and maps SQLite's
errors; the SQL modules are plain functions over a connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmm.store import outbox, retention
from zmm.store.db import errors_mapped, transaction, translate_errors
from zmm.timestamps import iso

if TYPE_CHECKING:
    from zmm.store.job_row import Job


@errors_mapped
class Housekeeping:
    conn: sqlite3.Connection
    path: Path
    clock: Callable[[], float]

    if TYPE_CHECKING:
        def get(self, job_id: str) -> Job: ...  # zmm.store.Store.get

    # -- retention (zmm cleanup, pinning; SQL in zmm.store.retention) --------

    def pin(self, job_id: str, pinned: bool = True) -> tuple[Job, bool]:
        """Exempt a job from cleanup (or make it subject again); returns the job
        and whether anything changed."""
        job = self.get(job_id)
        with translate_errors(self.path), transaction(self.conn) as conn:
            changed = retention.set_pinned(conn, job.id, pinned, iso(self.clock()))
        return self.get(job.id), changed

    def retention_candidates(self, statuses: Iterable[str], *,
                             include_deleted: bool) -> Iterator[sqlite3.Row]:
        with translate_errors(self.path):
            yield from retention.eligible(self.conn, statuses, include_deleted=include_deleted)

    def referenced_assets(self) -> Iterator[str]:
        with translate_errors(self.path):
            yield from retention.referenced_paths(self.conn)

    def referenced_inputs(self) -> Iterator[str]:
        with translate_errors(self.path):
            yield from retention.input_paths(self.conn)

    def input_users(self, relative: str) -> set[str]:
        with translate_errors(self.path):
            return retention.input_users(self.conn, relative)

    def active_job_ids(self) -> set[str]:
        with translate_errors(self.path):
            return retention.active_ids(self.conn)

    def mark_assets_deleted(self, entries: list[tuple[str, str]], stamp: str) -> set[str]:
        if not entries:
            return set()
        with translate_errors(self.path), transaction(self.conn) as conn:
            return retention.mark_deleted(conn, entries, stamp)

    def restore_assets(self, entries: list[tuple[str, str]], stamp: str) -> None:
        if not entries:
            return
        with translate_errors(self.path), transaction(self.conn) as conn:
            retention.restore(conn, entries, stamp)

    def purge_jobs(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        with translate_errors(self.path), transaction(self.conn) as conn:
            return retention.purge(conn, job_ids)

    def record_compression(self, job_id: str, old_outputs: str | None, fields: dict[str, Any],
                           message: str) -> bool:
        stamp = iso(self.clock())
        with translate_errors(self.path), transaction(self.conn) as conn:
            return retention.record_compression(conn, job_id, old_outputs, fields, message,
                                                stamp)

    # -- webhook outbox (sending in zmm.webhooks; SQL in zmm.store.outbox) ---

    def next_webhook_due(self) -> str | None:
        """When the earliest unclaimed pending delivery is due (ISO time), or None."""
        with translate_errors(self.path):
            return outbox.next_due(self.conn, iso(self.clock()))

    def claim_webhook_deliveries(self, claimer: str, *, lease_s: float, limit: int = 1,
                                 job_ids: list[str] | None = None,
                                 exclude: list[int] | None = None) -> list[outbox.Delivery]:
        now = self.clock()
        with translate_errors(self.path), transaction(self.conn) as conn:
            return outbox.claim(conn, claimer, iso(now), iso(now + lease_s), limit=limit,
                                job_ids=job_ids, exclude=exclude)

    def record_webhook_try(self, delivery: outbox.Delivery, claimer: str, *, status: str,
                           last_error: str | None, retry_in_s: float | None, message: str,
                           data: dict[str, Any]) -> bool:
        now = self.clock()
        next_try_at = iso(now + retry_in_s) if retry_in_s is not None else None
        with translate_errors(self.path), transaction(self.conn) as conn:
            return outbox.record_try(conn, delivery, claimer, status=status,
                                     last_error=last_error, next_try_at=next_try_at,
                                     stamp=iso(now), message=message, data=data)

    def webhook_deliveries(self, job_id: str) -> list[outbox.Delivery]:
        with translate_errors(self.path):
            return outbox.for_job(self.conn, job_id)

    def add_alert(self, url: str, event: str, backend: dict[str, Any]) -> str:
        """Queue a backend alert in the outbox (its rows: `backend:<url>` as job id)."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            return outbox.add_alert(conn, url, event, backend, iso(self.clock()))
