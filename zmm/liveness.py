"""Whether a worker, and the backend it serves, is live: the one answer every
view gives (`zmm backends`, `zmm top`, `zmm queue`, `zmm wait`, a waiting
`zmm generate`) and the cloud rule for jobs no live backend can run.

The heartbeat is the worker's row in the spool's `workers` table: every
worker, inline ones included, writes its `heartbeat_at` every third of a lease
(zmm.worker.upkeep). A worker is live while that beat is at most LIVE_LEASES
leases old; a backend is live while a live worker serves it (the worker's
`backend` names it). The backend's own row (state, GPU memory, drain switch)
says what that worker last saw; its `heartbeat_at` is when the row was
written, never read for liveness.

Pure: rows in, values out; callers pass `now` (zmm.store.Store.live_workers
reads the rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zmm.config.fleet import DEFAULT_NAME
from zmm.timestamps import iso

LIVE_LEASES = 3  # a worker is live while its heartbeat is at most this many leases old
NO_WORKER = "no worker"
DRAINING = "draining"
STARTING = "starting"
# The states a live worker writes to its backend's row (zmm.worker.status).
REPORTED = ("up", "down", "starting")


def live_since(now: float, lease_s: float) -> float:
    """The oldest heartbeat of a live worker at `now`."""
    return now - LIVE_LEASES * lease_s


def is_live(worker: Mapping[str, Any] | None, now: float, lease_s: float) -> bool:
    """Whether `worker` (a `workers` row) has beaten within LIVE_LEASES leases of `now`."""
    if worker is None:
        return False
    beat = worker.get("heartbeat_at")
    return bool(beat) and str(beat) >= iso(live_since(now, lease_s))


def backend_of(worker: Mapping[str, Any]) -> str:
    """The name of the backend a worker serves (a row from before backends: `default`)."""
    return str(worker.get("backend") or DEFAULT_NAME)


def serving(name: str, workers: Iterable[Mapping[str, Any]], now: float,
            lease_s: float) -> Mapping[str, Any] | None:
    """The live worker serving the backend `name` (the latest to beat), or None."""
    found = [worker for worker in workers
             if backend_of(worker) == name and is_live(worker, now, lease_s)]
    return max(found, key=lambda worker: str(worker.get("heartbeat_at"))) if found else None


def backend_state(row: Mapping[str, Any] | None, worker: Mapping[str, Any] | None,
                  now: float, lease_s: float) -> str:
    """A backend's state from its row (None: never written) and the worker
    serving it (None: none): `no worker` when that worker is not live, whatever
    the drain switch says (a backend nothing serves drains nothing); then
    `draining` (the operator's switch); then what the live worker last wrote
    (`up`, `down`, `starting`). A live worker whose row is not written yet, or
    still says the previous worker stopped, is `starting`."""
    if not is_live(worker, now, lease_s):
        return NO_WORKER
    row = row or {}
    if row.get("draining"):
        return DRAINING
    state = row.get("state")
    return str(state) if state in REPORTED else STARTING
