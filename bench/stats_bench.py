"""`zmm stats` over 1,000,000 jobs: median time of the report's queries, whole and
per query, for `--since 30d` and `--since all`. Rows are bulk-loaded with
sqlite-utils into a spool created by zmm (same schema and indexes), with three
lifecycle events per job plus swaps, downgrades and VRAM waits.

Usage: python bench/stats_bench.py [--rows 1000000] [--span-days 365] [--repeat 5] [--compare]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlite_utils

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm.store import Store, stats  # noqa: E402
from zmm.store.events import span  # noqa: E402
from zmm.timestamps import iso, parse_iso  # noqa: E402

MODELS = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]
CLOUD = {"stability": 0.04, "openai": 0.08}


def job_rows(count: int, start: float, step: float):
    rng = random.Random(7)
    for n in range(count):
        ts = start + n * step
        created = iso(ts)
        status = rng.choices(["succeeded", "failed", "cancelled", "queued"], [90, 6, 3, 1])[0]
        backend = model = seconds = cost = None
        if status in ("succeeded", "failed"):
            backend = "local" if rng.random() < 0.97 else rng.choice(list(CLOUD))
            model = rng.choice(MODELS) if backend == "local" else backend + "-default"
            cost = CLOUD.get(backend)
        if status == "succeeded":
            seconds = rng.uniform(5, 60) if backend == "local" else rng.uniform(3, 12)
        yield {"id": f"mmg-bench-{n:08d}", "status": status, "priority": "MEDIUM",
               "priority_rank": 2, "prompt": f"bench prompt {n}", "negative_prompt": "",
               "requester": f"agent-{n % 50}", "quality_tier": "standard",
               "workflow": "sdxl-txt2img", "params": "{}", "backend": backend,
               "model_used": model, "generation_time_s": seconds, "cost_usd": cost,
               "created_at": created, "queued_at": created, "queued_ts": ts,
               "updated_at": created}


def event_rows(count: int, start: float, step: float):
    """Each job's events after its enqueueing (kept in the job row), with ids as zmm
    numbers them within the job (zmm.store.events.span); job_rows' jobs get seq 1..count."""
    rng = random.Random(11)
    unload = json.dumps({"unload": ["llama3:8b"]}, separators=(",", ":"))
    for index in range(count):
        at = iso(start + index * step)
        events = [{"kind": "claimed", "to_state": "running"}]
        roll = rng.random()
        if roll < 0.05:  # a swap writes several 'swap' events; the first names what it unloads
            events += [{"kind": "swap", "message": "need VRAM", "data": unload},
                       {"kind": "swap", "message": "released in 1.2s"}]
        elif roll < 0.07:
            events.append({"kind": "downgrade", "message": "running on SD1.5"})
        elif roll < 0.08:
            events.append({"kind": "vram_wait", "message": "waiting for VRAM"})
        events.append({"kind": "succeeded", "to_state": "succeeded"})
        first, _ = span(index + 1)
        for n, event in enumerate(events):
            yield {"id": first + n, "at": at, **event}


def timed(function, repeat: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, result


def window_function_times(conn, window: stats.Window) -> dict:
    """The same nearest-rank percentiles numbered by ROW_NUMBER(), for comparison."""
    where, params = window.jobs_where()
    rows = conn.execute(
        f"""WITH ranked AS (
                SELECT model_used AS model, generation_time_s AS s,
                       ROW_NUMBER() OVER w AS rank,
                       COUNT(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING
                                      AND UNBOUNDED FOLLOWING) AS n
                FROM jobs WHERE {stats._TIMED} AND {where}
                WINDOW w AS (PARTITION BY model_used ORDER BY generation_time_s))
            SELECT model, n, MAX(CASE WHEN rank = (n + 1) / 2 THEN s END) AS median,
                   MAX(CASE WHEN rank = (95 * n + 99) / 100 THEN s END) AS p95, MAX(s) AS max
            FROM ranked GROUP BY model""", params).fetchall()
    return {row["model"] or stats.NONE: stats.Timing(*tuple(row)[1:]) for row in rows}


def measure(conn, now: float, repeat: int, compare: bool) -> None:
    for label, since in (("--since 30d", now - 30 * 86400), ("--since all", None)):
        measure_window(conn, label, since, now, repeat, compare)


def measure_window(conn, label: str, since: float | None, now: float, repeat: int,
                   compare: bool) -> None:
    ms, report = timed(lambda: stats.report(conn, since, now), repeat)
    print(f"| `{label}`, whole report | {ms:.1f} | {report.public()['jobs']['total']:,} jobs |")
    window = stats.window_of(conn, since, now)
    _, _, timed_jobs = stats.counts(conn, window)
    parts = {
        "window": lambda: stats.window_of(conn, since, now),
        "counts": lambda: stats.counts(conn, window),
        "generation_times": lambda: stats.generation_times(conn, window, timed_jobs),
        "overall_median": lambda: stats.overall_median(conn, window, timed_jobs),
        "event_counts": lambda: stats.event_counts(conn, window),
    }
    if compare:
        parts["generation_times, window functions"] = lambda: window_function_times(conn, window)
    for name, part in parts.items():
        ms, _ = timed(part, repeat)
        print(f"| `{label}`, {name} | {ms:.1f} | |")
    if compare:
        assert window_function_times(conn, window) == report.timings, "percentiles differ"


def load(path: Path, count: int, start: float, step: float) -> None:
    Store(path).close()  # zmm creates the schema
    started = time.perf_counter()
    db = sqlite_utils.Database(path)
    db["jobs"].insert_all(job_rows(count, start, step), batch_size=5000)
    db["job_events"].insert_all(event_rows(count, start, step), batch_size=5000)
    db.close()
    print(f"(loaded {count:,} jobs in {time.perf_counter() - started:.0f} s)\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--span-days", type=float, default=365.0,
                        help="the jobs' created_at spread evenly over this many days")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", action="store_true",
                        help="also time the percentiles computed with window functions")
    parser.add_argument("--keep", type=Path, help="load the spool here once and reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "spool.db"
        step = args.span_days * 86400 / args.rows
        if not path.exists():
            load(path, args.rows, time.time() - args.rows * step, step)
        with Store(path) as store:
            newest = store.conn.execute("SELECT MAX(created_at) FROM jobs").fetchone()[0]
            now = parse_iso(newest) + step  # a kept spool is measured as of its loading
            print(f"`zmm stats` queries, {args.rows:,} jobs over {args.span_days:g} days, "
                  f"median of {args.repeat}\n\n| query | median ms | |\n"
                  "|---|---|---|")
            measure(store.conn, now, args.repeat, args.compare)

if __name__ == "__main__":
    main()
