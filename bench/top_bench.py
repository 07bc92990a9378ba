"""`zmm top`'s reads on a big spool: the median time of one frame's reads (every
query of zmm.store.board in its one snapshot, then the frame built from them),
and each query's plan. Rows are bulk-loaded with sqlite-utils into a spool
created by zmm (same schema and indexes), like bench/stats_bench.py: a week of
finished jobs (about 2,400 in the last hour, 5 % failed), `--queued` waiting in
four priorities, `--running` on as many backends, each with a live worker.

Usage: python bench/top_bench.py [--jobs 100000] [--queued 5000] [--running 8] [--repeat 20]
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

from zmm import dashboard  # noqa: E402
from zmm.store import Store, board  # noqa: E402
from zmm.store.backends import BackendReport  # noqa: E402
from zmm.timestamps import iso  # noqa: E402

RANKS = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3}
PARAMS = '{"width": 1024, "height": 1024, "steps": 30, "cfg": 7.0, "sampler": "euler", ' + \
    '"scheduler": "normal", "seed": 1, "lora": [], "hires": null, ' + '"pad": "' + "x" * 250 + '"}'
FINISH_EVERY_S = 1.5  # one job finished every 1.5 s: about 2,400 an hour


def job_rows(count: int, queued: int, running: int, now: float):
    rng = random.Random(7)
    done = count - queued - running
    for n in range(count):
        level = rng.choices(list(RANKS), [2, 10, 70, 18])[0]
        row = {"id": f"mmg-bench-{n:08d}", "priority": level, "priority_rank": RANKS[level],
               "prompt": f"bench prompt {n}, a lighthouse at dusk, watercolour",
               "negative_prompt": "", "requester": f"agent-{n % 50}", "workflow": "sdxl-txt2img",
               "params": PARAMS, "model_requested": "sd_xl_base_1.0.safetensors"}
        if n < done:  # finished in seq order, the newest a second ago
            completed = now - (done - n) * FINISH_EVERY_S
            seconds = rng.uniform(3, 20)
            status = rng.choices(["succeeded", "failed", "cancelled"], [93, 5, 2])[0]
            created = completed - seconds - rng.uniform(0, 600)
            row.update(status=status, started_at=iso(completed - seconds),
                       completed_at=iso(completed), backend="local",
                       model_used="sd_xl_base_1.0.safetensors",
                       generation_time_s=seconds if status == "succeeded" else None,
                       error_message="ComfyUI: out of memory\ntraceback" if status == "failed"
                       else None)
        elif n < done + running:
            index = n - done
            created = now - 30
            row.update(status="running", started_at=iso(now - 5), worker_id=f"worker-{index}",
                       comfy_url=f"http://gpu{index}:8188", phase="sampling",
                       progress_value=7, progress_max=20, lease_expires_at=iso(now + 60))
        else:
            created = now - (count - n) * 0.01
            row["status"] = "queued"
        row.update(created_at=iso(created), queued_at=iso(created), queued_ts=created,
                   updated_at=iso(created))
        yield row


def build(path: Path, jobs: int, queued: int, running: int, now: float) -> None:
    with Store(path, clock=lambda: now) as store:  # zmm creates the schema
        for index in range(running):
            store.report_backend(BackendReport(
                f"gpu{index}", f"http://gpu{index}:8188", index, f"worker-{index}", "up",
                loaded_model="sd_xl_base_1.0.safetensors", vram_total_bytes=24 << 30,
                vram_free_bytes=(6 + index) << 30))
            store.register_worker(f"worker-{index}", f"http://gpu{index}:8188", "busy")
    started = time.perf_counter()
    db = sqlite_utils.Database(path)
    db["jobs"].insert_all(job_rows(jobs, queued, running, now), batch_size=5000)
    db.close()
    print(f"(loaded {jobs:,} jobs in {time.perf_counter() - started:.0f} s)\n")


def plans(store: Store, now: float, repeat: int) -> None:
    """Each statement of a frame: its median time and its plan."""
    conn = store.conn
    pick, params = board.queries.candidates_query(now, 600.0, limit=10)
    statements = {
        "running": (board._RUNNING, {}),
        "open jobs by priority": (board._OPEN_BY_RANK, {}),
        "finished in the last hour": (board._FINISHED, {"since": iso(now - 3600),
                                                        "limit": board.FINISHED_LIMIT}),
        "failures": (board._FAILURES, {"scan": 50, "limit": 5}),
        "queue head": (f"SELECT * FROM ({pick}) AS picked JOIN jobs ON jobs.id = picked.id "
                       "ORDER BY picked.rank, jobs.seq", params),
    }
    print("| statement | median ms | plan |\n|---|---|---|")
    for name, (sql, values) in statements.items():
        steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, values)]
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(sql, values).fetchall()
            times.append(time.perf_counter() - started)
        print(f"| {name} | {statistics.median(times) * 1000:.2f} | {'; '.join(steps)} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=5000)
    parser.add_argument("--running", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        build(path, args.jobs, args.queued, args.running, now)
        with Store(path, clock=lambda: now) as store:
            reads, frames = [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                snapshot = store.board(aging_s=600.0, lease_s=30.0)
                middle = time.perf_counter()
                frame = dashboard.build(snapshot, now=now, spool=str(path), configured=[],
                                        lease_s=30.0)
                frames.append(time.perf_counter() - middle)
                reads.append(middle - started)
            print(f"{args.jobs:,} jobs ({args.queued:,} queued, {args.running} running), "
                  f"median of {args.repeat}: reads {statistics.median(reads) * 1000:.1f} ms, "
                  f"frame model {statistics.median(frames) * 1000:.2f} ms; "
                  f"{frame.throughput.succeeded} succeeded and {frame.throughput.failed} failed "
                  f"in the last hour{' (partial)' if frame.throughput.partial else ''}\n")
            plans(store, now, args.repeat)


if __name__ == "__main__":
    main()
