"""Worker throughput, idle gap and added latency, against the fake ComfyUI run
as a separate process, side by side in one run with two other clients of the
same server:

- raw: the least a client can do (POST /prompt, wait on the websocket for
  `executing` null, GET /history, GET /view), one job at a time;
- polling: the seed's design (POST /prompt, GET /history every 2 s, GET /view).

Usage: python bench/worker_bench.py [--jobs 60] [--slow-jobs 20] [--polling-jobs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm import intake  # noqa: E402
from zmm.backends.comfy import ComfyClient  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.store import Store  # noqa: E402
from zmm.worker.assembly import build_worker  # noqa: E402
from zmm.worker.scope import Scope  # noqa: E402


def start_fake(step_time: float, output_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--step-time",
                                str(step_time), "--output-dir", str(output_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def graph(seed: int, prefix: str) -> dict:
    template = json.loads((ROOT / "workflows" / "sd15-txt2img.json").read_text())
    from zmm.workflows import bind

    return bind(template, {"prompt": "bench", "negative": "", "seed": seed, "steps": 1, "cfg": 7.0,
                           "sampler": "euler", "scheduler": "normal", "width": 64, "height": 64,
                           "checkpoint": "v1-5-pruned-emaonly.safetensors", "batch_size": 1,
                           "filename_prefix": prefix})


def raw_client(url: str, jobs: int) -> tuple[float, list[float]]:
    client_id = uuid.uuid4().hex
    latencies = []
    http = httpx.Client(base_url=url)
    with connect(url.replace("http", "ws", 1) + f"/ws?clientId={client_id}") as ws:
        ws.recv()
        start = time.perf_counter()
        for n in range(jobs):
            began = time.perf_counter()
            prompt_id = http.post("/prompt", json={"prompt": graph(10_000 + n, f"raw/{n}"),
                                                   "client_id": client_id}).json()["prompt_id"]
            while True:
                message = json.loads(ws.recv())
                data = message["data"]
                if message["type"] == "executing" and data.get("node") is None \
                        and data.get("prompt_id") == prompt_id:
                    break
            entry = http.get(f"/history/{prompt_id}").json()[prompt_id]
            image = next(iter(entry["outputs"].values()))["images"][0]
            http.get("/view", params=image).raise_for_status()
            latencies.append(time.perf_counter() - began)
        return time.perf_counter() - start, latencies


def polling_client(url: str, jobs: int) -> list[float]:
    http = httpx.Client(base_url=url)
    latencies = []
    for n in range(jobs):
        began = time.perf_counter()
        prompt_id = http.post("/prompt", json={"prompt": graph(20_000 + n, f"poll/{n}")}).json()["prompt_id"]
        while True:
            time.sleep(2)  # the seed's ImageGenerator polls every 2 seconds
            history = http.get(f"/history/{prompt_id}").json()
            if prompt_id in history:
                break
        image = next(iter(history[prompt_id]["outputs"].values()))["images"][0]
        http.get("/view", params=image).raise_for_status()
        latencies.append(time.perf_counter() - began)
    return latencies


def zmm_worker(url: str, jobs: int, home: Path) -> tuple[float, list[float], list[str]]:
    os.environ["ZMM_HOME"] = str(home)
    settings = load(home)
    for key, value in {"comfyui.url": url, "worker.poll_s": 0.05, "ollama.enabled": False}.items():
        settings.override(key, value)
    store = Store(settings.spool_path)
    specs = intake.build({"prompt": "bench", "size": "64x64", "steps": "1", "count": jobs,
                          "quality": "draft", "seed": "1"}, settings)
    ids = [job.id for job in store.enqueue(specs)]
    worker = build_worker(settings, store, ComfyClient(url), scope=Scope(once=True))
    start = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - start
    jobs_done = store.get_many(ids)
    assert all(job.status == "succeeded" for job in jobs_done), "a job did not succeed"
    return elapsed, [], ids


def completed_wall(home: Path, ids: list[str]) -> dict[str, float]:
    from zmm.timestamps import parse_iso

    with Store(home / "spool.db") as store:
        return {job.id: parse_iso(job.completed_at) for job in store.get_many(ids)}


def server_runs(url: str, ids: set[str]) -> list[dict]:
    runs = httpx.get(url + "/fake/runs").json()
    return sorted((run for run in runs if run["prompt_id"] in ids), key=lambda r: r["started"])


def gaps_ms(runs: list[dict]) -> list[float]:
    return [(b["started"] - a["ended"]) * 1000 for a, b in zip(runs, runs[1:], strict=False)]


def scenario(step_time: float, jobs: int, workdir: Path) -> dict:
    fake, url = start_fake(step_time, workdir / f"out-{step_time}")
    try:
        raw_time, raw_lat = raw_client(url, jobs)
        zmm_time, zmm_lat, ids = zmm_worker(url, jobs, workdir / f"home-{step_time}")
        runs = server_runs(url, set(ids))
    finally:
        fake.terminate()
        fake.wait()
    run_times = [r["ended"] - r["started"] for r in runs]
    done = completed_wall(workdir / f"home-{step_time}", ids)
    # Added latency: from the server finishing a job to zmm having it recorded.
    zmm_added = [done[r["prompt_id"]] - r["ended_wall"] for r in runs]
    return {"step_time": step_time, "jobs": jobs, "raw_jobs_s": jobs / raw_time,
            "zmm_jobs_s": jobs / zmm_time, "ratio": (jobs / zmm_time) / (jobs / raw_time),
            "gap_median_ms": statistics.median(gaps_ms(runs)),
            "zmm_added_ms": statistics.median(zmm_added) * 1000,
            "raw_added_ms": (statistics.median(raw_lat) - statistics.median(run_times)) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slow-jobs", type=int, default=30)
    parser.add_argument("--polling-jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zero = scenario(0.0, args.jobs, workdir)
        slow = scenario(0.2, args.slow_jobs, workdir)
        fake, url = start_fake(0.2, workdir / "out-poll")
        try:
            polled = polling_client(url, args.polling_jobs)
        finally:
            fake.terminate()
            fake.wait()
    print("| benchmark | result | notes |\n|---|---|---|")
    for label, result in (("zero-time jobs", zero), ("200 ms jobs", slow)):
        print(f"| worker throughput, {label} | zmm {result['zmm_jobs_s']:.1f} jobs/s vs raw client "
              f"{result['raw_jobs_s']:.1f} jobs/s = {result['ratio'] * 100:.0f} % | "
              f"{result['jobs']} jobs; spool claim, submit, follow, fetch, save, record |")
    print(f"| idle gap between jobs on the server | median {zero['gap_median_ms']:.2f} ms (zero-time), "
          f"{slow['gap_median_ms']:.2f} ms (200 ms jobs) | one job submitted ahead |")
    polled_added = (statistics.median(polled) - 0.2) * 1000
    print(f"| added latency per job (200 ms jobs) | zmm {slow['zmm_added_ms']:.1f} ms, raw client "
          f"{slow['raw_added_ms']:.1f} ms, seed's 2 s polling client {polled_added:.0f} ms | "
          "median; from the server finishing a job to the client holding the saved file |")


if __name__ == "__main__":
    main()
