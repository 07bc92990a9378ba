"""How soon a running `zmm serve-worker` submits a job it did not have, and what
a waiting worker costs, against the fake ComfyUI run as a separate process.

- idle: the worker has nothing to do; a job is queued, and the next one only
  after it succeeded and a 20-50 ms gap;
- running: one job runs on ComfyUI, so there is room for one ahead; the next
  job is queued 20-50 ms after the previous one was submitted.

Latency = the job's `submitted_at` minus the time it was queued (both from the
spool, written just before POST /prompt); for idle jobs also the time the fake
started running it. CPU = user+sys of the worker process (/proc/<pid>/stat)
over a window, as % of one core.

Usage: python bench/latency_bench.py [--jobs 200] [--idle-s 10] [--tree PATH]
(`--tree` runs the worker from another checkout, e.g. to compare with main).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm import intake  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.store import Store  # noqa: E402
from zmm.timestamps import parse_iso  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def start_fake(step_time: float, output_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--step-time",
                                str(step_time), "--output-dir", str(output_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def wait_for(condition, timeout: float = 60.0, every: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("the worker did not get there in time")


class Bench:
    def __init__(self, workdir: Path, url: str, tree: Path) -> None:
        self.home = workdir / "home"
        env = dict(os.environ, ZMM_HOME=str(self.home), ZMM_COMFYUI_URL=url,
                   ZMM_OLLAMA_ENABLED="false", PYTHONPATH=str(tree), NO_COLOR="1")
        self.settings = load(self.home, env)
        self.store = Store(self.settings.spool_path)
        self.worker = subprocess.Popen([sys.executable, "-m", "zmm", "serve-worker",
                                        "--no-progress"], cwd=tree, env=env,
                                       stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(lambda: self.store.live_workers(lease_s=20.0), timeout=30)
        self.seed = 0

    def enqueue(self, steps: int) -> str:
        self.seed += 1
        specs = intake.build({"prompt": "bench", "size": "64x64", "steps": str(steps),
                              "quality": "draft", "seed": str(self.seed)}, self.settings)
        return self.store.enqueue(specs)[0].id

    def latency_ms(self, job_id: str) -> float:
        job = self.store.get(job_id)
        return (parse_iso(job.submitted_at) - job.queued_ts) * 1000

    def status(self, job_id: str) -> str:
        return self.store.get(job_id).status

    def close(self) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=30)
        self.store.close()


def idle_scenario(bench: Bench, jobs: int) -> tuple[list[float], list[str]]:
    latencies, ids = [], []
    for _ in range(jobs):
        time.sleep(random.uniform(0.02, 0.05))
        job_id = bench.enqueue(steps=1)
        wait_for(lambda job_id=job_id: bench.status(job_id) == "succeeded")
        latencies.append(bench.latency_ms(job_id))
        ids.append(job_id)
    return latencies, ids


def running_scenario(bench: Bench, jobs: int, steps: int) -> list[float]:
    """A chain: each job is queued while the one before it runs alone."""
    latencies = []
    before_previous, previous = None, bench.enqueue(steps)
    for _ in range(jobs):
        wait_for(lambda p=previous: bench.store.get(p).submitted_at)
        if before_previous is not None:  # the previous job is then the only one in flight
            wait_for(lambda b=before_previous: bench.status(b) == "succeeded")
        time.sleep(random.uniform(0.02, 0.05))
        job_id = bench.enqueue(steps)
        wait_for(lambda j=job_id: bench.store.get(j).submitted_at)
        latencies.append(bench.latency_ms(job_id))
        before_previous, previous = previous, job_id
    wait_for(lambda: bench.status(previous) == "succeeded")
    return latencies


def cpu_percent(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds * 100


def running_cpu(bench: Bench, url: str, seconds: float, step_time: float) -> float:
    """CPU while one long job runs and nothing else is queued."""
    job_id = bench.enqueue(steps=min(150, int((seconds + 3) / step_time)))
    wait_for(lambda: bench.store.get(job_id).phase == "sampling", timeout=30)
    percent = cpu_percent(bench.worker.pid, seconds)
    wait_for(lambda: bench.status(job_id) == "succeeded", timeout=seconds + 60)
    return percent


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout the worker runs from")
    args = parser.parse_args()
    step_time = 0.1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fake, url = start_fake(step_time, workdir / "out")
        bench = Bench(workdir, url, args.tree.resolve())
        try:
            time.sleep(2.0)  # start-up work (recovery, first heartbeat) is not idling
            idle_cpu = cpu_percent(bench.worker.pid, args.idle_s)
            idle, ids = idle_scenario(bench, args.jobs)
            running = running_scenario(bench, args.jobs, steps=2)
            busy_cpu = running_cpu(bench, url, args.idle_s, step_time)
            runs = {r["prompt_id"]: r for r in httpx.get(url + "/fake/runs").json()}
            started = [(runs[i]["started_wall"] - bench.store.get(i).queued_ts) * 1000
                       for i in ids if "started_wall" in runs.get(i, {})]
        finally:
            bench.close()
            fake.terminate()
            fake.wait()
    print(f"worker from {args.tree.resolve()}, {args.jobs} jobs per scenario\n")
    print("| measure | p50 | p95 | max |\n|---|---|---|---|")
    rows = [("idle worker: queued -> submitted", idle),
            ("idle worker: queued -> running on ComfyUI", started),
            ("one job running: queued -> submitted ahead", running)]
    for label, values in rows:
        if values:
            print(f"| {label} | {pct(values, 50):.1f} ms | {pct(values, 95):.1f} ms | "
                  f"{max(values):.1f} ms |")
    print(f"| idle worker CPU, {args.idle_s:g} s | {idle_cpu:.2f} % of one core | | |")
    print(f"| CPU while one job runs, {args.idle_s:g} s | {busy_cpu:.2f} % of one core | | |")


if __name__ == "__main__":
    main()
