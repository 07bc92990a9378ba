"""Spool claim + finish throughput with 1, 4 and 16 processes, next to huey's
SqliteHuey (dequeue + put result) on the same machine in the same run.
Every item must be taken exactly once: lost and duplicated items are counted.
The clock starts once every process has imported its library and opened the
queue, so interpreter start-up is not counted for either.

To weigh storage settings: `--page-size N` creates zmm's spools with N-byte pages,
`--pragma SETTING` (repeatable) runs `PRAGMA SETTING` on every zmm connection, e.g.
`--pragma wal_autocheckpoint=1000` for SQLite's default checkpoint interval.

Needs huey (bench only): pip install -r bench/requirements.txt
Usage: python bench/spool_bench.py [--items 2000] [--repeat 3] [--page-size N] [--pragma S]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing as mp
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def zmm_fill(path: Path, items: int, page_size: int | None = None) -> None:
    from zmm import intake
    from zmm.config import load

    settings = load(path.parent)
    from zmm.store import Store

    if page_size:  # an empty database with that page size, which zmm then migrates
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA page_size = {page_size}")
            conn.execute("VACUUM")

    with Store(path) as store:
        for start in range(0, items, 500):
            store.enqueue(intake.build({"prompt": "bench", "count": min(500, items - start)}, settings))


def zmm_drain(path: str, worker: str, out: mp.Queue, ready, go, pragmas=()) -> None:
    from zmm.jobs import JobState
    from zmm.store import Store

    taken = []
    with Store(Path(path)) as store:
        for setting in pragmas:
            store.conn.execute(f"PRAGMA {setting}")
        ready.release()
        go.wait()
        while True:
            job = store.claim(worker, lease_s=600, aging_s=600)
            if job is None:
                break
            store.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING, worker_id=worker)
            taken.append(job.id)
    out.put(taken)


def huey_fill(path: Path, items: int) -> None:
    from huey import SqliteHuey

    storage = SqliteHuey(filename=str(path)).storage
    for n in range(items):
        storage.enqueue(f"task-{n}".encode())


def huey_drain(path: str, worker: str, out: mp.Queue, ready, go) -> None:
    from huey import SqliteHuey

    storage = SqliteHuey(filename=path).storage
    storage.queue_size()  # open the connection before the start signal, as zmm's side does
    taken = []
    ready.release()
    go.wait()
    while True:
        data = storage.dequeue()
        if data is None:
            break
        storage.put_data(data.decode(), b"done")
        taken.append(data.decode())
    out.put(taken)


def measure(name: str, fill, drain, processes: int, items: int,
            workdir: Path) -> tuple[float, int, int]:
    path = workdir / f"{name}-{processes}.db"
    fill(path, items)
    out: mp.Queue = mp.Queue()
    ready, go = mp.Semaphore(0), mp.Event()
    workers = [mp.Process(target=drain, args=(str(path), f"w{n}", out, ready, go))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:  # every process has imported its library and opened the queue
        ready.acquire()
    start = time.perf_counter()
    go.set()
    taken = [item for _ in workers for item in out.get()]
    elapsed = time.perf_counter() - start
    for worker in workers:
        worker.join()
    counts = Counter(taken)
    return items / elapsed, items - len(counts), sum(n - 1 for n in counts.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--page-size", type=int, choices=[512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--pragma", action="append", default=[])
    args = parser.parse_args()
    fill = functools.partial(zmm_fill, page_size=args.page_size)
    drain = functools.partial(zmm_drain, pragmas=tuple(args.pragma))
    print("| processes | zmm claim+finish/s | huey dequeue+result/s | ratio | lost / duplicated |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for processes in (1, 4, 16):
            zmm_runs, huey_runs, bad = [], [], 0
            for attempt in range(args.repeat):
                run_dir = workdir / f"{processes}-{attempt}"
                run_dir.mkdir()
                rate, lost, dup = measure("zmm", fill, drain, processes, args.items, run_dir)
                zmm_runs.append(rate)
                bad += lost + dup
                rate, lost, dup = measure("huey", huey_fill, huey_drain, processes, args.items, run_dir)
                huey_runs.append(rate)
                bad += lost + dup
            zmm_rate, huey_rate = statistics.median(zmm_runs), statistics.median(huey_runs)
            print(f"| {processes} | {zmm_rate:.0f} | {huey_rate:.0f} | {zmm_rate / huey_rate:.2f} | "
                  f"{bad} |")


if __name__ == "__main__":
    main()
