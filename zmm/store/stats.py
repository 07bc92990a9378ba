"""The success metrics of `zmm stats`, read from the spool for a time window.

Read-only functions over an open connection, returning plain values. Counting,
sums and nearest-rank percentiles all run in SQL, walking indexes in order rather
than sorting or numbering rows (bench/stats_bench.py). Never writes, never formats.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from zmm.jobs import JobState
from zmm.measures import rank
from zmm.store.queries import DONE, OPEN
from zmm.timestamps import iso, parse_iso

STATUSES = tuple(state.value for state in JobState)
WEEK_S = 7 * 86400
# The seed document's targets: name -> (comparison, threshold).
TARGETS = {"median_generation_s": ("<", 60), "local_success_rate": (">", 0.95),
           "images_per_week": (">=", 20)}
COMPOSED = "compose"  # the backend of a job `zmm compose` made: text drawn, nothing generated
# How a NULL backend (the job never ran) and a NULL model are reported.
NONE = "none"
_TIMED = f"{DONE} AND status = 'succeeded' AND generation_time_s IS NOT NULL"
# The condition of the partial index job_events_notable (migration 0008), word for word.
_NOTABLE = ("(kind = 'swap' OR kind = 'downgrade' OR kind = 'cloud_fallback' "
            "OR kind = 'vram_wait')")


@dataclass(frozen=True)
class Window:
    """Jobs created at or after `since_iso` (None: every job), as seen at `until_iso`.

    `first_seq`, when known, is the smallest seq among the window's jobs: every job in
    the window has at least that seq, so `seq >= first_seq` narrows each query exactly
    (a rowid range, and the tail of each status in `jobs_done`) without assuming that
    seq follows created_at. `every_job`: the window reaches past the oldest job."""

    since_iso: str | None
    until_iso: str
    first_seq: int | None = None
    every_job: bool = False
    empty: bool = False

    def jobs_where(self) -> tuple[str, list[Any]]:
        if self.since_iso is None or self.every_job:
            return "1", []
        if self.empty:
            return "0", []
        if self.first_seq is None:
            return "created_at >= ?", [self.since_iso]
        return "seq >= ? AND created_at >= ?", [self.first_seq, self.since_iso]

    def events_where(self) -> tuple[str, list[Any]]:
        return ("at >= ?", [self.since_iso]) if self.since_iso else ("1", [])


@dataclass(frozen=True)
class Timing:
    count: int
    median: float
    p95: float
    max: float

    def public(self) -> dict[str, Any]:
        return {"count": self.count, "median_s": _round(self.median, 3),
                "p95_s": _round(self.p95, 3), "max_s": _round(self.max, 3)}


@dataclass(frozen=True)
class Report:
    window: Window
    by_status: dict[str, int]
    by_backend: dict[str, dict[str, Any]]  # backend -> {status: jobs, ..., "cost_usd": sum}
    timings: dict[str, Timing]  # model used -> generation times of its succeeded jobs
    median_generation_s: float | None
    events: dict[str, int]
    oldest_created_at: str | None

    @property
    def finished(self) -> int:
        return self.by_status["succeeded"] + self.by_status["failed"]

    @property
    def success_rate(self) -> float | None:
        return _round(self.by_status["succeeded"] / self.finished, 4) if self.finished else None

    @property
    def local_success_rate(self) -> float | None:
        """Succeeded on ComfyUI over all finished generations (a cloud rescue counts
        against it; `zmm compose` jobs generate nothing and do not count)."""
        local = self.by_backend.get("local", {}).get("succeeded", 0)
        generated = self.finished - self.by_backend.get(COMPOSED, {}).get("succeeded", 0)
        return _round(local / generated, 4) if generated else None

    @property
    def cloud_jobs(self) -> int:
        return sum(counts["succeeded"] for backend, counts in self.by_backend.items()
                   if backend not in ("local", NONE, COMPOSED))

    @property
    def cost_total(self) -> float:
        return round(float(sum(counts["cost_usd"] for counts in self.by_backend.values())), 4)

    @property
    def images_per_week(self) -> float | None:
        """Succeeded jobs over the window's real length (10 in one day is 70 a week)."""
        start = self.window.since_iso or self.oldest_created_at
        if start is None:
            return None
        length_s = parse_iso(self.window.until_iso) - parse_iso(start)
        return _round(self.by_status["succeeded"] * WEEK_S / length_s, 4) if length_s > 0 else None

    def public(self) -> dict[str, Any]:
        """The stable JSON shape of `zmm stats --json` (documented in the README)."""
        values = {"median_generation_s": _round(self.median_generation_s, 3),
                  "local_success_rate": self.local_success_rate,
                  "images_per_week": self.images_per_week}
        return {
            "since": self.window.since_iso, "until": self.window.until_iso,
            "jobs": {"total": sum(self.by_status.values()), "by_status": dict(self.by_status)},
            "by_backend": {name: dict(counts, cost_usd=_round(counts["cost_usd"], 4))
                           for name, counts in self.by_backend.items()},
            "success_rate": self.success_rate,
            "local_success_rate": self.local_success_rate,
            "generation_time_s": {model: timing.public() for model, timing in self.timings.items()},
            "cost_usd": {"total": self.cost_total, "cloud_jobs": self.cloud_jobs},
            "events": dict(self.events),
            "images_per_week": self.images_per_week,
            "targets": {name: _target(name, value) for name, value in values.items()},
        }


def report(conn: sqlite3.Connection, since: float | None, until: float) -> Report:
    """Every metric for jobs created at or after `since` (None: all jobs), at `until`.
    The percentile walks use ranks from the counts, so every query must see the
    same snapshot even while a worker finishes jobs: Store.stats_report runs
    this inside one read snapshot."""
    window = window_of(conn, since, until)
    by_status, by_backend, timed = counts(conn, window)
    return Report(window=window, by_status=by_status, by_backend=by_backend,
                  timings=generation_times(conn, window, timed),
                  median_generation_s=overall_median(conn, window, timed),
                  events=event_counts(conn, window),
                  oldest_created_at=oldest_created_at(conn) if since is None else None)


def window_of(conn: sqlite3.Connection, since: float | None, until: float) -> Window:
    if since is None:
        return Window(None, iso(until))
    since_iso, until_iso = iso(since), iso(until)
    oldest = oldest_created_at(conn)
    if oldest is not None and oldest >= since_iso:
        return Window(since_iso, until_iso, every_job=True)
    head = conn.execute("SELECT seq FROM jobs WHERE created_at >= ? ORDER BY created_at LIMIT 1",
                        [since_iso]).fetchone()
    if head is None:
        return Window(since_iso, until_iso, empty=True)
    last = conn.execute("SELECT MAX(seq) FROM jobs").fetchone()[0]
    if last - head[0] > last // 2:  # most of the spool: finding the floor would cost more
        return Window(since_iso, until_iso)
    # +seq: a bare MIN(seq) makes SQLite walk the table from seq 1 to the first match.
    first = conn.execute("SELECT MIN(+seq) FROM jobs WHERE created_at >= ?",
                         [since_iso]).fetchone()[0]
    return Window(since_iso, until_iso, first)


# model used -> backend -> (succeeded jobs with a generation time, the longest time)
Timed = dict[str | None, dict[str | None, tuple[int, float]]]


def counts(conn: sqlite3.Connection,
           window: Window) -> tuple[dict[str, int], dict[str, dict[str, Any]], Timed]:
    """Jobs per status; per backend, jobs per status and their summed cost; and per
    (model, backend) pair, its succeeded jobs with a generation time and the longest."""
    where, params = window.jobs_where()
    by_status = dict.fromkeys(STATUSES, 0)
    by_backend: dict[str, dict[str, Any]] = {}
    timed: Timed = {}
    # Open and finished jobs are in two partial indexes: one walk through each.
    sql = """SELECT status, backend, model_used, COUNT(*) AS jobs,
                    COUNT(generation_time_s) AS timed, MAX(generation_time_s) AS longest,
                    TOTAL(cost_usd) AS cost
             FROM jobs WHERE {scope} AND {where} GROUP BY status, backend, model_used"""
    rows = [row for scope in (OPEN, DONE)
            for row in conn.execute(sql.format(scope=scope, where=where), params)]
    for row in rows:
        name = row["backend"] if row["backend"] is not None else NONE
        entry = by_backend.setdefault(name, {**dict.fromkeys(STATUSES, 0), "cost_usd": 0.0})
        entry[row["status"]] += row["jobs"]
        entry["cost_usd"] += row["cost"]
        by_status[row["status"]] += row["jobs"]
        if row["status"] == "succeeded" and row["timed"]:
            timed.setdefault(row["model_used"], {})[row["backend"]] = (row["timed"], row["longest"])
    return by_status, dict(sorted(by_backend.items())), timed


def generation_times(conn: sqlite3.Connection, window: Window, timed: Timed) -> dict[str, Timing]:
    """Per model used: count, median and p95 (nearest rank) and max generation time."""
    where, params = window.jobs_where()
    timings = {}
    for model in sorted(timed, key=lambda name: (name is None, name or "")):
        backends = timed[model]
        n = sum(count for count, _ in backends.values())
        # One backend (the usual case) keeps the walk inside one ordered index range.
        scope = "backend IS ? AND model_used IS ?" if len(backends) == 1 else "model_used IS ?"
        scope_params = [*backends, model] if len(backends) == 1 else [model]
        walk = (f"{scope} AND {where}", [*scope_params, *params])
        median, p95 = (_nth(conn, *walk, rank=rank(n, percent), n=n) for percent in (50, 95))
        longest = max(longest for _, longest in backends.values())
        timings[model if model is not None else NONE] = Timing(n, median, p95, longest)
    return timings


def overall_median(conn: sqlite3.Connection, window: Window, timed: Timed) -> float | None:
    """The median generation time over every succeeded job, whatever its model."""
    n = sum(count for backends in timed.values() for count, _ in backends.values())
    return _nth(conn, *window.jobs_where(), rank=rank(n, 50), n=n) if n else None


def _nth(conn: sqlite3.Connection, where: str, params: list[Any], *, rank: int, n: int) -> float:
    """The rank-th smallest (1-based, of n) generation time of succeeded jobs matching
    `where`. OFFSET steps along an index without building rows, from whichever end
    is nearer: far cheaper than numbering every row with a window function, which
    costs ~0.7 s per million rows on the development VM (bench/stats_bench.py)."""
    order, offset = ("ASC", rank - 1) if rank <= n - rank + 1 else ("DESC", n - rank)
    return conn.execute(
        f"SELECT generation_time_s FROM jobs WHERE {_TIMED} AND {where} "
        f"ORDER BY generation_time_s {order} LIMIT 1 OFFSET ?", [*params, offset]).fetchone()[0]


def event_counts(conn: sqlite3.Connection, window: Window) -> dict[str, int]:
    """Swaps, downgrades, cloud fallbacks and VRAM waits recorded in the window. A swap
    writes several 'swap' events; only its first carries {"unload": [...]}."""
    where, params = window.events_where()
    where = f"{_NOTABLE} AND {where}"
    row = conn.execute(
        f"""SELECT
              (SELECT COUNT(*) FROM job_events WHERE kind = 'swap' AND {where}
                 AND json_valid(data) AND json_type(data, '$.unload') IS NOT NULL) AS swaps,
              (SELECT COUNT(*) FROM job_events WHERE kind = 'downgrade' AND {where}) AS downgrades,
              (SELECT COUNT(*) FROM job_events WHERE kind = 'cloud_fallback' AND {where})
                 AS cloud_fallbacks,
              (SELECT COUNT(*) FROM job_events WHERE kind = 'vram_wait' AND {where})
                 AS vram_waits""",
        params * 4).fetchone()
    return dict(row)


def oldest_created_at(conn: sqlite3.Connection) -> str | None:
    return conn.execute("SELECT MIN(created_at) FROM jobs").fetchone()[0]


def _target(name: str, value: float | None) -> dict[str, Any]:
    # Judged on the reported (rounded) value, so `value` and `met` never disagree.
    comparison, threshold = TARGETS[name]
    if value is None:
        return {"target": threshold, "value": None, "met": None}
    met = {"<": value < threshold, ">": value > threshold, ">=": value >= threshold}[comparison]
    return {"target": threshold, "value": value, "met": met}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
