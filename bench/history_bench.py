"""`zmm history` pages out of 1,000,000 jobs: median query time per filter.
Rows are bulk-loaded with sqlite-utils into a spool created by zmm (same
schema, indexes and full-text index), then read through zmm's own queries.

Usage: python bench/history_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlite_utils

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm.store import Store, queries  # noqa: E402
from zmm.store.db import iso  # noqa: E402

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
               "updated_at": created, "generation_time_s": rng.uniform(5, 60)}


def timed(conn, flt, repeat: int = 15) -> tuple[float, int]:
    samples, total = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        page, total = queries.history(conn, flt)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        Store(path).close()  # zmm creates the schema
        started = time.perf_counter()
        db = sqlite_utils.Database(path)
        db["jobs"].insert_all(rows(args.rows, time.time() - args.rows * 2.5), batch_size=5000)
        load_s = time.perf_counter() - started
        with Store(path) as store:
            week = iso(time.time() - 7 * 86400)
            cases = {
                "newest page, no filter": queries.HistoryFilter(),
                "--status failed": queries.HistoryFilter(statuses=("failed",)),
                "--requester agent-7": queries.HistoryFilter(requester="agent-7"),
                "--model sd15": queries.HistoryFilter(model="v1-5-pruned-emaonly.safetensors"),
                "--since 7d": queries.HistoryFilter(since_iso=week),
                "--search tower17": queries.HistoryFilter(search="tower17"),
                "--search diagram (in 25 % of prompts)": queries.HistoryFilter(search="diagram"),
                "--status failed --offset 5000": queries.HistoryFilter(statuses=("failed",), offset=5000),
            }
            print(f"| history filter ({args.rows:,} jobs) | median ms | matching |\n|---|---|---|")
            for name, flt in cases.items():
                ms, total = timed(store.conn, flt)
                print(f"| `{name}` | {ms:.1f} | {total:,} |")
    print(f"\n(loaded {args.rows:,} rows in {load_s:.0f}s)")


if __name__ == "__main__":
    main()
