"""Why a queued job waits when no live backend can run it: pinned to a backend
no live worker serves (or one that is draining, or lacks a file), or needing a
model file no live backend's server has. `zmm queue`, a waiting `zmm generate`
and the cloud rule for such jobs all ask `waiting_reason`.

Pure, but for `read_live`: takes the spool's backend rows and live workers as
plain values; which backends are live is zmm.liveness'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zmm import liveness


@dataclass(frozen=True)
class LiveBackend:
    """A backend a live worker serves: the files its server has (None: not read
    yet) and whether the operator is draining it."""

    name: str
    files: frozenset[str] | None
    draining: bool = False


def live_backends(rows: Iterable[Mapping[str, Any]], workers: Iterable[Mapping[str, Any]],
                  now: float, lease_s: float) -> dict[str, LiveBackend]:
    """The backends whose state (zmm.liveness.backend_state) is not `no worker`
    at `now`, with what `rows` (the backends table, files decoded) records for each."""
    recorded = {row["name"]: row for row in rows}
    workers = list(workers)
    found = {}
    for name in dict.fromkeys(liveness.backend_of(worker) for worker in workers):
        row = recorded.get(name)
        state = liveness.backend_state(row, liveness.serving(name, workers, now, lease_s),
                                       now, lease_s)
        if state == liveness.NO_WORKER:
            continue
        files = (row or {}).get("files")
        found[name] = LiveBackend(name, frozenset(files) if files is not None else None,
                                  state == liveness.DRAINING)
    return found


def read_live(store: Any, lease_s: float) -> dict[str, LiveBackend]:
    """`live_backends` of the spool `store` (a zmm.store.Store) now."""
    return live_backends(with_nodes(store.backends(), store.backend_nodes()),
                         store.live_workers(lease_s), store.clock(), lease_s)


def with_nodes(rows: Iterable[Mapping[str, Any]],
               classes: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    """The backend rows with each server's node classes among its files, as the
    'nodes/CLASS' entries a custom workflow's needs name (a row whose files were
    never read stays unknown)."""
    return [{**row, "files": [*row["files"], *(f"nodes/{name}" for name in
                                               classes.get(row["name"], ()))]}
            if row.get("files") is not None else dict(row) for row in rows]


def needs_of(raw: str | None) -> list[str] | None:
    """A job's `needs` column decoded (None: a job from before schema 10)."""
    return json.loads(raw) if raw else None


def file_name(need: str) -> str:
    """'checkpoints/flux1-dev.safetensors' -> 'flux1-dev.safetensors' (and
    'nodes/CLASS' -> 'CLASS')."""
    return need.partition("/")[2] or need


def waiting_reason(needs: list[str] | None, on_backend: str | None,
                   live: Mapping[str, LiveBackend]) -> str | None:
    """Why no live backend can run a job with these needs and pin; None when one
    can (or may: its files are not read yet), and when no worker is live at all
    (that has its own message: no worker is running)."""
    if not live:
        return None
    wanted = needs or []
    if on_backend is not None:
        chosen = live.get(on_backend)
        if chosen is None:
            return f"no backend serves it: pinned to {on_backend}, which has no live worker"
        if chosen.draining:
            return f"no backend serves it: pinned to {on_backend}, which is draining"
        missing = _missing(wanted, chosen.files)
        return (f"no backend serves it: pinned to {on_backend}, which has no "
                f"{file_name(missing[0])}") if missing else None
    serving = [backend for backend in live.values() if not backend.draining]
    if not serving:
        return "no backend serves it: every live backend is draining"
    if any(backend.files is None or not _missing(wanted, backend.files) for backend in serving):
        return None
    everywhere = set().union(*(backend.files or frozenset() for backend in serving))
    absent = [need for need in wanted if need not in everywhere]
    if absent:
        return f"no backend has {file_name(absent[0])}"
    return "no backend has all of " + ", ".join(file_name(need) for need in wanted)


def _missing(wanted: list[str], files: frozenset[str] | None) -> list[str]:
    if files is None:
        return []
    return [need for need in wanted if need not in files]
