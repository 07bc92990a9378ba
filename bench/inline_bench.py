"""N waiting `zmm generate` processes and no worker, against the same N jobs
drained by one `zmm serve-worker`, both against the fake ComfyUI run as a
separate process, each in a fresh $ZMM_HOME:

- waiters: N `zmm generate PROMPT` started at once, no worker; the clock stops
  when the last one exits (each has printed its own image's path);
- worker: a worker already connected, then N `zmm generate PROMPT --no-wait`
  started at once; the clock stops when the last job has succeeded;
- drain: the N jobs already queued, then `zmm serve-worker --once` (no process
  start-up of the queuers in the time, only the worker's).

Usage: python bench/inline_bench.py [--jobs 12 50] [--step-time 0.05] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_fake(step_time: float, output_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--step-time",
                                str(step_time), "--output-dir", str(output_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def zmm(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zmm", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def environment(url: str) -> dict:
    home = tempfile.mkdtemp(prefix="zmm-inline-bench-")
    return {**os.environ, "ZMM_HOME": home, "ZMM_COMFYUI_URL": url, "NO_COLOR": "1",
            "ZMM_WORKER_POLL_S": "0.05", "ZMM_OLLAMA_ENABLED": "false",
            "PYTHONPATH": str(ROOT)}


def succeeded(env: dict) -> int:
    path = Path(env["ZMM_HOME"]) / "spool.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=15) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
        except sqlite3.OperationalError:  # the first process is still creating the spool
            return 0


def waiters(url: str, jobs: int, steps: list[str]) -> tuple[float, int]:
    """Seconds until the last waiter exits, and how many of them held the lock."""
    env = environment(url)
    started = time.monotonic()
    processes = [zmm(env, "generate", f"waiter {n}", *steps) for n in range(jobs)]
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0 and out.strip().endswith(".png"), err
    elapsed = time.monotonic() - started
    with sqlite3.connect(Path(env["ZMM_HOME"]) / "spool.db") as conn:
        holders = conn.execute("SELECT COUNT(DISTINCT worker_id) FROM jobs").fetchone()[0]
    return elapsed, holders


def one_worker(url: str, jobs: int, steps: list[str]) -> float:
    env = environment(url)
    log = Path(env["ZMM_HOME"]) / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen([sys.executable, "-m", "zmm", "serve-worker", "--no-progress"],
                                  cwd=ROOT, env=env, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 60
    while "connected to ComfyUI" not in log.read_text():
        assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
        time.sleep(0.05)
    started = time.monotonic()
    processes = [zmm(env, "generate", f"queued {n}", *steps, "--no-wait") for n in range(jobs)]
    for process in processes:
        process.communicate(timeout=600)
        assert process.returncode == 0
    while succeeded(env) < jobs:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    worker.terminate()
    worker.wait(timeout=60)
    return elapsed


def drain(url: str, jobs: int, steps: list[str]) -> float:
    env = environment(url)
    queued = zmm(env, "generate", "drained", *steps, "--count", str(jobs), "--no-wait")
    queued.communicate(timeout=120)
    started = time.monotonic()
    worker = zmm(env, "serve-worker", "--once", "--no-progress")
    worker.communicate(timeout=600)
    assert worker.returncode == 0 and succeeded(env) == jobs
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[12, 50])
    parser.add_argument("--step-time", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    steps = ["--size", "64x64", "--steps", str(args.steps)]
    fake, url = start_fake(args.step_time, Path(tempfile.mkdtemp(prefix="fake-comfy-")))
    try:
        print(f"fake ComfyUI: {args.steps} steps x {args.step_time:g}s = "
              f"{args.steps * args.step_time:g}s of sampling per job")
        print("| jobs | waiting generates, no worker (lock holders) | N --no-wait + one worker | "
              "one worker --once, jobs queued before | waiters / worker |")
        print("|---|---|---|---|---|")
        for jobs in args.jobs:
            inline, holders = waiters(url, jobs, steps)
            served = one_worker(url, jobs, steps)
            drained = drain(url, jobs, steps)
            print(f"| {jobs} | {inline:.1f} s ({holders}) | {served:.1f} s | {drained:.1f} s | "
                  f"{inline / served:.2f} |", flush=True)
    finally:
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
