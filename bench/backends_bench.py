"""Several backends draining one spool: 8 fake ComfyUI servers in separate
processes, each with a different subset of the models, one worker per backend
(`zmm serve-worker --backend NAME`), and 2,000 jobs of mixed models queued by
16 concurrent processes; against the same fake and jobs with one backend that
has every model. With N servers there are N models (at least 3), server i has
models i, i+1 and i+2 (mod N), and the jobs take the models in turn.

Reported (targets in docs/benchmarks.md):
- lost: jobs not succeeded at the end (0);
- run twice: jobs whose prompt ran to success more than once, on one server or
  several, from the fakes' run logs (0);
- misrouted: prompts a fake refused (400, a missing checkpoint), `requeued`
  events about a missing file, and succeeded jobs whose server lacks their
  model (0);
- idle gap: per server, the median time from one prompt's end to the next one's
  start, over the gaps during which a job it could run was queued (<= 5 ms);
- throughput: jobs / (last completion - first queued) of the 8 backends against
  8 x the same for one backend (>= 90 %).

Usage: python bench/backends_bench.py [--jobs 2000] [--servers 8] [--steps 8]
       [--step-time 0.05] [--single-jobs 150]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from zmm import intake  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.jobs import job_id_of_prompt  # noqa: E402
from zmm.store import Job, Store  # noqa: E402
from zmm.timestamps import parse_iso  # noqa: E402

MODELS_PER_SERVER = 3  # server i has models i .. i+2 (mod N): each model is on three servers
ENQUEUERS = 16


def model_names(servers: int) -> list[str]:
    """One model per server of the fleet (at least one per server's share)."""
    return [f"bench-model-{index}.safetensors" for index in range(max(servers, MODELS_PER_SERVER))]


def server_models(servers: int, models: list[str]) -> list[list[str]]:
    """Each server's checkpoints; one server alone has all of them."""
    if servers == 1:
        return [list(models)]
    return [sorted(models[(index + offset) % len(models)] for offset in range(MODELS_PER_SERVER))
            for index in range(servers)]


class Children:
    """Every process the benchmark starts; `close` ends them all, failure or not:
    SIGTERM, then SIGKILL for any still there after `grace_s`."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(args, cwd=ROOT, **kwargs)
        self.processes.append(process)
        return process

    def close(self, grace_s: float = 20.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def start_fake(children: Children, step_time: float, checkpoints: list[str],
               output_dir: Path) -> str:
    process = children.start(
        [sys.executable, "-m", "tests.fakes.comfyui", "--step-time", str(step_time),
         "--output-dir", str(output_dir), "--checkpoints", ",".join(checkpoints)],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        raise RuntimeError(f"the fake ComfyUI did not start (exit {process.poll()})")
    return url


def write_config(home: Path, urls: list[str]) -> None:
    """One remote backend (no gpu: VRAM from the server's /system_stats) per fake."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[ollama]", "enabled = false", ""]
    for index, url in enumerate(urls):
        lines += ["[[backends]]", f'name = "b{index}"', f'url = "{url}"', ""]
    (home / "config.toml").write_text("\n".join(lines), encoding="utf-8")


def enqueue_part(home: str, models: list[str], count: int, offset: int, steps: int
                 ) -> list[str]:
    """One enqueuing process: `count` jobs, one transaction each, models in turn."""
    settings = load(Path(home), dict(os.environ, ZMM_HOME=home))
    ids: list[str] = []
    with Store(settings.spool_path) as store:
        for number in range(offset, offset + count):
            specs = intake.build({"prompt": f"bench {number}", "size": "64x64", "steps": str(steps),
                                  "model": models[number % len(models)], "family": "sd15",
                                  "seed": str(number)}, settings)
            ids.extend(job.id for job in store.enqueue(specs))
    return ids


def wait_for(condition, timeout: float, every: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


class Fleet:
    """N fakes + N workers on one spool in a fresh $ZMM_HOME under `workdir`."""

    def __init__(self, fakes: Children, workers: Children, workdir: Path, servers: int,
                 models: list[str], step_time: float) -> None:
        self.workers = workers
        self.home = workdir / "home"
        self.models = server_models(servers, models)
        self.urls = [start_fake(fakes, step_time, models, workdir / f"out{index}")
                     for index, models in enumerate(self.models)]
        self.models_at = {url: set(models) for url, models in zip(self.urls, self.models, strict=True)}
        write_config(self.home, self.urls)
        self.env = dict(os.environ, ZMM_HOME=str(self.home), PYTHONPATH=str(ROOT), NO_COLOR="1")
        self.store = Store(load(self.home, self.env).spool_path)

    def start_workers(self) -> None:
        for index in range(len(self.urls)):
            self.workers.start([sys.executable, "-m", "zmm", "serve-worker", "--backend",
                                f"b{index}", "--no-progress"], env=self.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Ready: each worker has recorded its server's files (until then it claims nothing).
        wait_for(lambda: sum(1 for row in self.store.backends() if row.get("files_at"))
                 == len(self.urls), 120, 0.2, "the workers did not start")

    def enqueue(self, models: list[str], jobs: int, steps: int, processes: int) -> list[str]:
        share = [jobs // processes + (1 if index < jobs % processes else 0)
                 for index in range(processes)]
        offsets = [sum(share[:index]) for index in range(processes)]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.starmap(enqueue_part, [(str(self.home), models, count, offset, steps)
                                                for count, offset in zip(share, offsets, strict=True)])
        return [job_id for part in parts for job_id in part]

    def fake_log(self, what: str) -> list[list[dict]]:
        return [httpx.get(f"{url}/fake/{what}", timeout=30).json() for url in self.urls]


def idle_gaps(runs: list[dict], queued: list[float], claimed: list[float]
              ) -> list[tuple[float, float]]:
    """One server's gaps between a prompt's end and the next prompt's start, the
    ones that began while a job it could run was queued, as (wall-clock start,
    ms): `queued` and `claimed` are those jobs' queue and first-claim times,
    each sorted (wall clock)."""
    ordered = sorted((run for run in runs if run["ended"] is not None),
                     key=lambda run: run["started"])
    gaps = []
    for earlier, later in itertools.pairwise(ordered):
        at = earlier["ended_wall"]
        if bisect.bisect_right(queued, at) > bisect.bisect_right(claimed, at):
            gaps.append((at, (later["started"] - earlier["ended"]) * 1000))
    return gaps


def measure(fleet: Fleet, ids: list[str], enqueue_s: float) -> dict[str, Any]:
    finished = fleet.store.get_many(ids)
    runs, refused = fleet.fake_log("runs"), fleet.fake_log("refused")
    successes = Counter(job_id_of_prompt(run["prompt_id"]) for server in runs for run in server
                        if run["status"] == "success")
    missing_requeues = sum(
        1 for job in finished for event in fleet.store.events(job.id)
        if event["kind"] == "requeued" and " has no " in (event["message"] or ""))
    wrong_server = sum(1 for job in finished if job.status == "succeeded"
                       and job.model_requested not in fleet.models_at.get(job.comfy_url or "", ()))
    completions = [parse_iso(job.completed_at) for job in finished
                   if job.status == "succeeded" and job.completed_at]
    first = min(job.queued_ts for job in finished)
    last = max(completions, default=first)
    every_gap = server_gaps(fleet, finished, runs)
    pooled = [ms for gaps in every_gap for _, ms in gaps]
    # Gaps over 50 ms: (server, seconds after the first job was queued, ms).
    long_gaps = [(server, round(at - first, 2), round(ms, 1))
                 for server, gaps in enumerate(every_gap) for at, ms in gaps if ms > 50]
    return {
        "jobs": len(ids), "enqueue_s": round(enqueue_s, 2),
        "lost": len(ids) - len(completions),
        "run_twice": sum(1 for count in successes.values() if count > 1),
        "refused": sum(len(server) for server in refused),
        "missing_file_requeues": missing_requeues, "wrong_server": wrong_server,
        "throughput": len(completions) / (last - first) if last > first else 0.0,
        "wall_s": round(last - first, 2),
        "gap_ms": [round(statistics.median(ms for _, ms in gaps), 3) if gaps else None
                   for gaps in every_gap],
        "gap_p99_ms": round(statistics.quantiles(pooled, n=100, method="inclusive")[98], 3)
        if len(pooled) > 1 else None,
        "gap_max_ms": round(max(pooled), 3) if pooled else None,
        "gaps_counted": len(pooled), "long_gaps": long_gaps,
        "per_server": [sum(1 for run in server if run["status"] == "success") for server in runs],
    }


def server_gaps(fleet: Fleet, finished: list[Job], runs: list[list[dict]]
                ) -> list[list[tuple[float, float]]]:
    result = []
    for url, server_runs in zip(fleet.urls, runs, strict=True):
        mine = [job for job in finished if job.model_requested in fleet.models_at[url]]
        queued = sorted(job.queued_ts for job in mine)
        claimed = sorted(parse_iso(job.started_at) if job.started_at else float("inf")
                         for job in mine)
        result.append(idle_gaps(server_runs, queued, claimed))
    return result


def run(servers: int, models: list[str], jobs: int, steps: int, step_time: float,
        processes: int) -> dict[str, Any]:
    # Workers end before their servers: a draining worker finishes its job on a live server.
    fakes, workers = Children(), Children()
    with tempfile.TemporaryDirectory(prefix="zmm-backends-bench-") as workdir:
        fleet = None
        try:
            fleet = Fleet(fakes, workers, Path(workdir), servers, models, step_time)
            fleet.start_workers()
            started = time.time()
            ids = fleet.enqueue(models, jobs, steps, processes)
            enqueue_s = time.time() - started
            store = fleet.store
            try:
                wait_for(lambda: all(job.finished for job in store.get_many(ids)),
                         jobs * steps * step_time / servers * 3 + 120, 0.5, "unfinished jobs")
            except TimeoutError:
                pass  # measured as it is: the unfinished ones count as lost
            return measure(fleet, ids, enqueue_s)
        finally:
            workers.close()
            fakes.close()
            if fleet is not None:
                fleet.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-time", type=float, default=0.05)
    parser.add_argument("--single-jobs", type=int, default=150)
    args = parser.parse_args()
    if min(args.jobs, args.servers, args.steps, args.single_jobs) < 1 or args.step_time <= 0:
        parser.error("--jobs, --servers, --steps and --single-jobs must be >= 1, "
                     "--step-time > 0")
    print(f"fake: {args.steps} steps x {args.step_time * 1000:.0f} ms = "
          f"{args.steps * args.step_time * 1000:.0f} ms of sampling per job", flush=True)
    models = model_names(args.servers)  # the same job mix in both runs
    single = run(1, models, args.single_jobs, args.steps, args.step_time, 1)
    print("one backend:", json.dumps(single), flush=True)
    many = run(args.servers, models, args.jobs, args.steps, args.step_time, ENQUEUERS)
    print(f"{args.servers} backends:", json.dumps(many), flush=True)
    ratio = many["throughput"] / (args.servers * single["throughput"])
    gaps = [gap for gap in many["gap_ms"] if gap is not None]
    misrouted = many["refused"] + many["missing_file_requeues"] + many["wrong_server"]
    print(f"{args.servers} backends: {many['jobs']} jobs queued by {ENQUEUERS} processes in "
          f"{many['enqueue_s']:.1f} s; lost {many['lost']}, run twice {many['run_twice']}, "
          f"misrouted {misrouted}; median idle gap per server "
          f"{min(gaps, default=0):.2f}-{max(gaps, default=0):.2f} ms "
          f"(one backend {statistics.median(g for g in single['gap_ms'] if g is not None):.2f} ms); "
          f"{many['throughput']:.2f} jobs/s = {ratio:.1%} of {args.servers} x one backend's "
          f"{single['throughput']:.2f} jobs/s")


if __name__ == "__main__":
    main()
