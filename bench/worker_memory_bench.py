"""Whether a long-running `zmm serve-worker` grows with the jobs it has run: its
resident memory (VmRSS from /proc) after 1,000 jobs and at later marks, against
the fake ComfyUI (a separate process) with instant jobs.

Every job is queued before the worker starts; the worker runs them in FIFO
order, so the k-th job succeeding marks k jobs done.

Usage: python bench/worker_memory_bench.py [--jobs 10000] [--marks 1000,5000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm import intake  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.store import Store  # noqa: E402


def start_fake(output_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--step-time", "0",
                                "--output-dir", str(output_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS, and its parts: RssAnon (the heap) and RssFile (mapped files; the
    spool is read through a memory map, so its pages count once touched)."""
    wanted = ("VmRSS", "RssAnon", "RssFile")
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in wanted:
            found[key] = int(line.split()[1]) / 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--marks", default="100,1000,2000,5000",
                        help="job counts to sample at, besides --jobs")
    args = parser.parse_args()
    marks = sorted({int(m) for m in args.marks.split(",") if int(m) < args.jobs} | {args.jobs})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fake, url = start_fake(workdir / "out")
        home = workdir / "home"
        env = dict(os.environ, ZMM_HOME=str(home), ZMM_COMFYUI_URL=url,
                   ZMM_OLLAMA_ENABLED="false", PYTHONPATH=str(ROOT), NO_COLOR="1")
        settings = load(home, env)
        store = Store(settings.spool_path)
        spec = intake.build({"prompt": "bench", "size": "64x64", "steps": "1",
                             "quality": "draft", "seed": "1"}, settings)
        ids: list[str] = []
        while len(ids) < args.jobs:
            batch = min(1000, args.jobs - len(ids))
            ids += [job.id for job in store.enqueue(spec * batch)]
        worker = subprocess.Popen([sys.executable, "-m", "zmm", "serve-worker", "--no-progress"],
                                  cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL)
        rows = []
        began = time.monotonic()
        try:
            for mark in marks:
                job_id = ids[mark - 1]
                while store.get(job_id).status != "succeeded":
                    if worker.poll() is not None:
                        raise RuntimeError("the worker exited")
                    time.sleep(0.2)
                rows.append((mark, rss_mb(worker.pid), time.monotonic() - began))
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            fake.terminate()
            fake.wait()
            store.close()
    base = next((rss for mark, rss, _ in rows if mark == 1000), rows[0][1])
    print(f"{args.jobs} instant jobs, one worker, fake ComfyUI\n")
    print("| jobs done | VmRSS | vs 1,000 jobs | RssAnon | vs 1,000 jobs | RssFile | elapsed |\n"
          "|---|---|---|---|---|---|---|")
    for mark, rss, elapsed in rows:
        print(f"| {mark:,} | {rss['VmRSS']:.1f} MB | {rss['VmRSS'] - base['VmRSS']:+.1f} MB | "
              f"{rss['RssAnon']:.1f} MB | {rss['RssAnon'] - base['RssAnon']:+.1f} MB | "
              f"{rss['RssFile']:.1f} MB | {elapsed:.0f} s |")
    per_job = rows[-1][2] / args.jobs * 1000
    print(f"\n{per_job:.1f} ms per job on average")


if __name__ == "__main__":
    main()
