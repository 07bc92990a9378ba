"""Checkpoint switches for 60 LOW jobs alternating SDXL and SD1.5: FIFO against
zmm's grouping (prefer the loaded checkpoint within `model_group_window`
places), with HIGH jobs mixed in to show priorities still hold.

Usage: python bench/grouping_bench.py [--window 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm import intake  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.jobs import JobState  # noqa: E402
from zmm.store import Store  # noqa: E402


def run(window: int) -> tuple[int, int, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load(Path(tmp))
        with Store(settings.spool_path) as store:
            for n in range(60):
                model = "sdxl" if n % 2 == 0 else "sd15"
                store.enqueue(intake.build({"prompt": f"job {n}", "priority": "LOW", "model": model},
                                           settings))
                if n in (20, 40):
                    store.enqueue(intake.build({"prompt": "urgent", "priority": "HIGH", "model": "sdxl"},
                                               settings))
            order, loaded = [], None
            while True:
                job = store.claim("bench", lease_s=60, aging_s=86400, prefer_model=loaded,
                                  group_window=window)
                if job is None:
                    break
                order.append(job)
                loaded = job.model_requested
                store.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING, worker_id="bench")
            switches = sum(1 for a, b in zip(order, order[1:], strict=False)
                           if a.model_requested != b.model_requested)
            fifo = sorted(order, key=lambda j: (j.priority_rank, j.seq))
            fifo_rank = {job.id: rank for rank, job in enumerate(fifo)}
            worst_delay = max(position - fifo_rank[job.id] for position, job in enumerate(order))
            highs_first = all(job.priority == "HIGH" for job in order[:2])
            return switches, worst_delay, highs_first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args()
    fifo = run(0)
    grouped = run(args.window)
    print("| order | checkpoint switches | worst delay (places behind FIFO) | HIGH jobs first |")
    print("|---|---|---|---|")
    print(f"| FIFO | {fifo[0]} | {fifo[1]} | {fifo[2]} |")
    print(f"| zmm, window {args.window} | {grouped[0]} | {grouped[1]} | {grouped[2]} |")


if __name__ == "__main__":
    main()
