"""`zmm history` pages out of 1,000,000 jobs: median query time per filter, for
the page with its total count and for the cost sum `zmm history` also prints.
Rows are bulk-loaded with sqlite-utils into a spool created by zmm (same
schema, indexes and full-text index), then read through zmm's own queries;
3 % of the jobs ran on a cloud provider and cost money, as the seed expects.

`--page-size N` creates the spool with N-byte pages (see bench/spool_bench.py).

Usage: python bench/history_bench.py [--rows 1000000] [--page-size N]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlite_utils

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm.store import Store, history  # noqa: E402
from zmm.timestamps import iso  # noqa: E402

# A vocabulary with a long tail, as real prompts have: a few common words, many rare ones.
COMMON = "diagram cover dashboard thumbnail infographic clean flat modern".split()
RARE = [f"{stem}{n}" for n in range(400) for stem in ("light", "river", "tower", "graph", "node")]


def rows(count: int, start: float):
    rng = random.Random(7)
    for n in range(count):
        created = iso(start + n * 2.5)
        status = rng.choices(["succeeded", "failed", "cancelled", "queued"], [90, 6, 3, 1])[0]
        yield {"id": f"mmg-bench-{n:08d}", "status": status, "priority": "MEDIUM",
               "priority_rank": 2,
               "prompt": " ".join(rng.sample(COMMON, 2) + rng.sample(RARE, 3)),
               "negative_prompt": "", "requester": f"agent-{n % 50}", "quality_tier": "standard",
               "workflow": "sdxl-txt2img", "params": "{}", "model_used": rng.choice(
                   ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]),
               "created_at": created, "queued_at": created, "queued_ts": start + n * 2.5,
               "updated_at": created, "generation_time_s": rng.uniform(5, 60),
               **_backend(rng, status)}


def _backend(rng: random.Random, status: str) -> dict:
    if status not in ("succeeded", "failed"):
        return {}
    if rng.random() < 0.03:
        return {"backend": "stability", "cost_usd": 0.03}
    return {"backend": "local", "cost_usd": 0.0}


def timed(conn, flt, repeat: int = 15) -> tuple[float, float, int]:
    """Median ms of the page with its count, of the cost sum, and the count."""
    pages, sums, total = [], [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        page, total = history.page(conn, flt)
        middle = time.perf_counter()
        history.cost(conn, flt)
        pages.append(middle - start)
        sums.append(time.perf_counter() - middle)
    return statistics.median(pages) * 1000, statistics.median(sums) * 1000, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, choices=[512, 1024, 2048, 4096, 8192, 16384])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        if args.page_size:  # an empty database with that page size, which zmm then migrates
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute(f"PRAGMA page_size = {args.page_size}")
                conn.execute("VACUUM")
        Store(path).close()  # zmm creates the schema
        started = time.perf_counter()
        db = sqlite_utils.Database(path)
        db["jobs"].insert_all(rows(args.rows, time.time() - args.rows * 2.5), batch_size=5000)
        load_s = time.perf_counter() - started
        with Store(path) as store:
            week = iso(time.time() - 7 * 86400)
            cases = {
                "newest page, no filter": history.HistoryFilter(),
                "--status failed": history.HistoryFilter(statuses=("failed",)),
                "--requester agent-7": history.HistoryFilter(requester="agent-7"),
                "--model sd15": history.HistoryFilter(model="v1-5-pruned-emaonly.safetensors"),
                "--since 7d": history.HistoryFilter(since_iso=week),
                "--search tower17": history.HistoryFilter(search="tower17"),
                "--search diagram (in 25 % of prompts)": history.HistoryFilter(search="diagram"),
                "--status failed --offset 5000": history.HistoryFilter(statuses=("failed",), offset=5000),
            }
            cases["--backend stability"] = history.HistoryFilter(backend="stability")
            # An open and a finished status together: the union of two partial indexes.
            cases["--status queued,failed"] = history.HistoryFilter(statuses=("queued", "failed"))
            # A model with another filter: counted through jobs_model_created, not kept.
            cases["--model sd15 --since 7d"] = history.HistoryFilter(
                model="v1-5-pruned-emaonly.safetensors", since_iso=week)
            print(f"| history filter ({args.rows:,} jobs) | page + count, median ms | cost sum, "
                  "median ms | matching |\n|---|---|---|---|")
            for name, flt in cases.items():
                page_ms, cost_ms, total = timed(store.conn, flt)
                print(f"| `{name}` | {page_ms:.1f} | {cost_ms:.1f} | {total:,} |")
    print(f"\n(loaded {args.rows:,} rows in {load_s:.0f}s)")


if __name__ == "__main__":
    main()
