"""The model of one `zmm top` frame: what each panel says, computed from one
read of the spool (zmm.store.board) and the configured backends at a given
time. Pure: no I/O beyond `read`, no clock of its own (callers pass `now`), no
formatting beyond choosing values; zmm/cli/render_top.py draws it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmm import liveness, measures
from zmm.jobs import PRIORITY_RANK, Priority
from zmm.secrets import mask_url
from zmm.timestamps import iso, parse_iso

if TYPE_CHECKING:
    from zmm.store import Board

WINDOW_S = 3600  # the throughput panel's last hour
BUCKET_S = 300  # ... in bars of 5 minutes
NO_WORKER = liveness.NO_WORKER


@dataclass(frozen=True)
class BackendLine:
    name: str
    url: str
    state: str  # zmm.liveness.backend_state: up | down | starting | draining | no worker
    gpu: int | None
    vram_total_bytes: int | None
    vram_free_bytes: int | None
    loaded_model: str | None
    running: int  # jobs running on it now
    managed: bool = False
    restarts: int = 0
    last_error: str | None = None

    @property
    def vram_used_fraction(self) -> float | None:
        if not self.vram_total_bytes or self.vram_free_bytes is None:
            return None
        used = self.vram_total_bytes - self.vram_free_bytes
        return min(1.0, max(0.0, used / self.vram_total_bytes))


@dataclass(frozen=True)
class RunningLine:
    id: str
    priority: str
    phase: str
    step: int | None
    steps: int | None
    elapsed_s: float | None
    where: str  # backend name, else ComfyUI URL, cloud provider or worker id
    model: str | None
    prompt: str
    cancelling: bool = False


@dataclass(frozen=True)
class QueuedLine:
    position: int
    id: str
    priority: str
    waited_s: float
    model: str | None
    prompt: str
    on_backend: str | None = None
    note: str | None = None  # why it waits, when the worker said


@dataclass(frozen=True)
class Throughput:
    bucket_s: int
    buckets: tuple[tuple[int, int], ...]  # (succeeded, failed) per bucket, oldest first
    succeeded: int
    failed: int
    cancelled: int
    median_generation_s: float | None
    partial: bool = False  # more may have finished than were counted (zmm.store.board)


@dataclass(frozen=True)
class FailureLine:
    id: str
    ago_s: float | None
    error: str  # the first line of the error message
    where: str | None


@dataclass(frozen=True)
class Frame:
    at: float
    spool: str
    paused: bool
    workers: int  # live workers
    backends: tuple[BackendLine, ...]
    running: tuple[RunningLine, ...]
    head: tuple[QueuedLine, ...]
    queued: int
    queued_by_priority: dict[str, int]
    throughput: Throughput
    failures: tuple[FailureLine, ...]


def read(store: Any, settings: Any, *, head: int = 10, failures: int = 5,
         clock: Callable[[], float] | None = None) -> Frame:
    """One frame of the spool `store` as of `clock()` (default: the store's clock)."""
    from zmm.config import fleet

    now = (clock or store.clock)()
    lease_s = settings.get("worker.lease_s")
    board = store.board(aging_s=settings.get("worker.aging_s"), lease_s=lease_s,
                        head=head, failures=failures, window_s=WINDOW_S)
    return build(board, now=now, spool=str(store.path), configured=fleet.backends(settings),
                 lease_s=lease_s)


def build(board: Board, *, now: float, spool: str, configured: list[Any],
          lease_s: float) -> Frame:
    """The frame for `board` at `now`; `configured`: zmm.config.fleet.Backend entries,
    shown as 'no worker' until a worker reports them."""
    by_url = {row["url"]: row["name"] for row in board.backends}
    by_url.update({item.url: item.name for item in configured if item.url not in by_url})
    workers = {worker["id"]: worker for worker in board.workers}
    running = tuple(_running(job, now, by_url, workers) for job in board.running)
    backends = _backends(board, configured, running, now, lease_s)
    running_ranks = [PRIORITY_RANK[Priority(job.priority)] for job in running]
    queued_by_rank = {rank: count - running_ranks.count(rank)
                      for rank, count in board.open_by_rank.items()}
    by_priority = {level.value: max(0, queued_by_rank.get(rank, 0))
                   for level, rank in PRIORITY_RANK.items()}
    return Frame(
        at=now, spool=spool, paused=board.paused,
        workers=sum(1 for worker in board.workers if liveness.is_live(worker, now, lease_s)),
        backends=backends, running=running,
        head=tuple(_queued(position, job, now)
                   for position, job in enumerate(board.head, start=1)),
        queued=sum(by_priority.values()), queued_by_priority=by_priority,
        throughput=throughput(board.finished, now, partial=board.finished_partial),
        failures=tuple(_failure(job, now, by_url, workers) for job in board.failures),
    )


def throughput(finished: list[tuple[str, str, float | None]], now: float, *, partial: bool = False,
               window_s: int = WINDOW_S, bucket_s: int = BUCKET_S) -> Throughput:
    """Jobs finished in the `window_s` before `now`, in bars of `bucket_s`.
    Times stay ISO text: it sorts as time does, and thousands of rows are not parsed."""
    count = max(1, window_s // bucket_s)
    start = now - count * bucket_s
    edges = [iso(start + index * bucket_s) for index in range(1, count)]
    first, last = iso(start), iso(now)
    bars = [[0, 0] for _ in range(count)]
    totals = {"succeeded": 0, "failed": 0, "cancelled": 0}
    times = []
    for status, at, seconds in finished:  # (status, completed_at, generation_time_s)
        if not first <= at <= last:
            continue
        totals[status] += 1
        if status == "cancelled":
            continue
        bars[bisect.bisect_right(edges, at)][status == "failed"] += 1
        if status == "succeeded" and seconds is not None:
            times.append(seconds)
    return Throughput(bucket_s, tuple((ok, bad) for ok, bad in bars), totals["succeeded"],
                      totals["failed"], totals["cancelled"],
                      measures.median(times), partial)


def _backends(board: Board, configured: list[Any], running: tuple[RunningLine, ...],
              now: float, lease_s: float) -> tuple[BackendLine, ...]:
    rows = {row["name"]: row for row in board.backends}
    for item in configured:  # configured here, never reported yet
        rows.setdefault(item.name, {"name": item.name, "url": item.url, "gpu": item.gpu,
                                    "state": "unknown", "managed": bool(item.command)})
    lines = []
    for name in sorted(rows):
        row = rows[name]
        state = liveness.backend_state(
            row, liveness.serving(name, board.workers, now, lease_s), now, lease_s)
        lines.append(BackendLine(
            name=name, url=mask_url(row["url"]), state=state, gpu=row.get("gpu"),
            vram_total_bytes=row.get("vram_total_bytes"),
            vram_free_bytes=row.get("vram_free_bytes"), loaded_model=row.get("loaded_model"),
            running=sum(1 for job in running if job.where == name),
            managed=bool(row.get("managed")), restarts=row.get("restarts") or 0,
            last_error=_first_line(row.get("last_error"))))
    return tuple(lines)


def _running(job: dict[str, Any], now: float, by_url: dict[str, str],
             workers: dict[str, dict[str, Any]]) -> RunningLine:
    started = job["started_at"] or job["submitted_at"]
    return RunningLine(
        id=job["id"], priority=job["priority"], phase=job["phase"] or "running",
        step=job["progress_value"], steps=job["progress_max"],
        elapsed_s=max(0.0, now - parse_iso(started)) if started else None,
        where=_where(job, by_url, workers) or "?", model=job["model"],
        prompt=_first_line(job["prompt"]) or "",
        cancelling=job["cancel_requested_at"] is not None)


def _where(job: dict[str, Any], by_url: dict[str, str],
           workers: dict[str, dict[str, Any]]) -> str | None:
    if job.get("backend_name"):  # the backend whose worker claimed or adopted it
        return str(job["backend_name"])
    worker = workers.get(job["worker_id"] or "")
    if worker and worker.get("backend"):
        return str(worker["backend"])
    url = job["comfy_url"] or (worker or {}).get("comfy_url")
    if url:
        return by_url.get(url, mask_url(url))
    if job.get("backend") not in (None, "local"):
        return str(job["backend"])  # a cloud provider
    return job["worker_id"]


def _queued(position: int, job: dict[str, Any], now: float) -> QueuedLine:
    return QueuedLine(position=position, id=job["id"], priority=job["priority"],
                      waited_s=max(0.0, now - job["queued_ts"]), model=job["model"],
                      prompt=_first_line(job["prompt"]) or "", on_backend=job["on_backend"],
                      note=job["phase_detail"])


def _failure(job: dict[str, Any], now: float, by_url: dict[str, str],
             workers: dict[str, dict[str, Any]]) -> FailureLine:
    at = job["completed_at"]
    return FailureLine(id=job["id"], ago_s=max(0.0, now - parse_iso(at)) if at else None,
                       error=_first_line(job["error_message"]) or "(no message)",
                       where=_where(dict(job, backend=None), by_url, workers))


def _first_line(text: str | None) -> str | None:
    if text is None:
        return None
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""
