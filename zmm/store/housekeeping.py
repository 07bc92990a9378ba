"""The Store's methods for housekeeping: cleanup and pinning (SQL in
zmm.store.retention) and the webhook outbox (SQL in zmm.store.outbox; sending
in zmm.worker.webhooks). A part of zmm.store.Store, split off to keep the
façade readable; it uses the Store's connection, path and clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zmm.store import outbox, retention
from zmm.store.db import iso, transaction, translate_errors

if TYPE_CHECKING:
    from zmm.store.job_row import Job


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
        changed = retention.set_pinned(self.conn, self.path, job.id, pinned, iso(self.clock()))
        return self.get(job.id), changed

    def retention_candidates(self, statuses: Iterable[str], *,
                             include_deleted: bool) -> Iterator[sqlite3.Row]:
        return retention.eligible(self.conn, self.path, statuses, include_deleted=include_deleted)

    def referenced_assets(self) -> Iterator[str]:
        return retention.referenced_paths(self.conn, self.path)

    def referenced_inputs(self) -> Iterator[str]:
        return retention.input_paths(self.conn, self.path)

    def input_users(self, relative: str) -> set[str]:
        return retention.input_users(self.conn, self.path, relative)

    def active_job_ids(self) -> set[str]:
        return retention.active_ids(self.conn, self.path)

    def mark_assets_deleted(self, entries: list[tuple[str, str]], stamp: str) -> set[str]:
        return retention.mark_deleted(self.conn, self.path, entries, stamp)

    def restore_assets(self, entries: list[tuple[str, str]], stamp: str) -> None:
        retention.restore(self.conn, self.path, entries, stamp)

    def purge_jobs(self, job_ids: list[str]) -> int:
        return retention.purge(self.conn, self.path, job_ids)

    def record_compression(self, job_id: str, old_outputs: str | None, fields: dict[str, Any],
                           message: str) -> bool:
        return retention.record_compression(self.conn, self.path, job_id, old_outputs, fields,
                                            message, iso(self.clock()))

    # -- webhook outbox (sending in zmm.webhooks; SQL in zmm.store.outbox) ---

    def next_webhook_due(self) -> str | None:
        """When the earliest unclaimed pending delivery is due (ISO time), or None."""
        return outbox.next_due(self.conn, self.path, iso(self.clock()))

    def claim_webhook_deliveries(self, claimer: str, *, lease_s: float, limit: int = 1,
                                 job_ids: list[str] | None = None,
                                 exclude: list[int] | None = None) -> list[outbox.Delivery]:
        now = self.clock()
        return outbox.claim(self.conn, self.path, claimer, iso(now), iso(now + lease_s),
                            limit=limit, job_ids=job_ids, exclude=exclude)

    def record_webhook_try(self, delivery: outbox.Delivery, claimer: str, *, status: str,
                           last_error: str | None, retry_in_s: float | None, message: str,
                           data: dict[str, Any]) -> bool:
        now = self.clock()
        next_try_at = iso(now + retry_in_s) if retry_in_s is not None else None
        return outbox.record_try(self.conn, self.path, delivery, claimer, status=status,
                                 last_error=last_error, next_try_at=next_try_at, stamp=iso(now),
                                 message=message, data=data)

    def webhook_deliveries(self, job_id: str) -> list[outbox.Delivery]:
        return outbox.for_job(self.conn, self.path, job_id)

    def add_alert(self, url: str, event: str, backend: dict[str, Any]) -> str:
        """Queue a backend alert in the outbox (its rows: `backend:<url>` as job id)."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            return outbox.add_alert(conn, url, event, backend, iso(self.clock()))
