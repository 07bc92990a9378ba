"""What `zmm backends` shows: every configured backend beside the row its
worker writes (state, GPU memory, loaded model, last error) and the jobs
counted by its name, and any backend a worker reported that is not configured;
and the operator's drain switch. Its state is
zmm.liveness.backend_state: `no worker` unless a live worker serves it.
Reads and writes go through the Store; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zmm import liveness
from zmm.config import Config, fleet
from zmm.secrets import mask_url
from zmm.store import Store

HOUR_S = 3600.0


def overview(settings: Config, store: Store) -> list[dict[str, Any]]:
    """One dict per configured backend, in config order, then one per other
    backend a worker has reported (a `serve-worker --comfyui URL` one), by name
    (docs/json-output.md)."""
    configured = fleet.backends(settings)
    lease_s = settings.get("worker.lease_s")
    rows = {row["name"]: row for row in store.backends()}
    workers = store.live_workers(lease_s)
    now = store.clock()
    counts = store.backend_job_counts(since=now - HOUR_S)
    known = {backend.name for backend in configured}
    shown = configured + [fleet.Backend(name, row["url"], row.get("gpu"))
                          for name, row in rows.items() if name not in known]
    return [_entry(backend, rows.get(backend.name), counts.get(backend.name, {}),
                   liveness.serving(backend.name, workers, now, lease_s), now, lease_s)
            for backend in shown]


def _entry(backend: fleet.Backend, row: dict[str, Any] | None, counts: dict[str, int],
           worker: Mapping[str, Any] | None, now: float, lease_s: float) -> dict[str, Any]:
    state = liveness.backend_state(row, worker, now, lease_s)
    alive = state != liveness.NO_WORKER
    row = row or {}
    return {
        "name": backend.name, "url": mask_url(backend.url), "gpu": backend.gpu,
        "remote": not backend.local, "ollama": mask_url(backend.ollama) or None,
        "state": state, "worker_state": row.get("state"),
        "worker_id": worker["id"] if worker is not None and alive else None,
        "heartbeat_at": row.get("heartbeat_at"), "draining": bool(row.get("draining")),
        "managed": bool(row.get("managed")) if alive else bool(backend.command),
        "restarts": row.get("restarts") or 0,
        "vram_total_bytes": row.get("vram_total_bytes") if alive else None,
        "vram_free_bytes": row.get("vram_free_bytes") if alive else None,
        "loaded_model": row.get("loaded_model"),
        "jobs_running": counts.get("running", 0),
        "jobs_succeeded_last_hour": counts.get("succeeded", 0),
        "jobs_failed_last_hour": counts.get("failed", 0),
        "last_error": row.get("last_error"), "last_error_at": row.get("last_error_at"),
    }


def set_draining(settings: Config, store: Store, name: str, draining: bool) -> dict[str, Any]:
    """Drain (or resume) the backend `name`, configured or reported by a worker
    (NotFound, exit 3, lists the names); returns its overview entry afterwards."""
    chosen = fleet.backend(settings, name, store.backends())
    store.set_draining(chosen.name, chosen.url, draining)
    return next(item for item in overview(settings, store) if item["name"] == chosen.name)
