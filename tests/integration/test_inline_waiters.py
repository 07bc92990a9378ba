"""Many waiting `zmm generate` processes and no worker: the lock passes from one
to the next, every waiter ends with its own image, every job runs once; a
killed lock holder does not strand the others; `zmm wait` says when no worker
is alive. Real `zmm` processes against the fake ComfyUI."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until, zmm_process
from zmm.locks import FileLock, worker_lock_path
from zmm.store import Store

pytestmark = pytest.mark.slow

GENERATE = ("--size", "64x64", "--steps", "2")


def start_waiters(count: int, env: dict | None = None) -> list:
    return [zmm_process("generate", f"waiter {n}", "--requester", f"waiter-{n}", *GENERATE,
                        env=env) for n in range(count)]


def finish(processes: list, timeout: float) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each; on a hang, no process outlives the test."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def jobs_by_requester(settings) -> dict[str, dict]:
    with Store(settings.spool_path) as store:
        rows = store.conn.execute("SELECT id, requester, status, output_path FROM jobs").fetchall()
        return {row["requester"]: {**dict(row), "kinds": Counter(
            event["kind"] for event in store.events(row["id"]))} for row in rows}


@pytest.mark.parametrize("count", [12, 50])
def test_waiting_generates_without_a_worker_all_finish(worker_env, settings, comfy, count):
    started = time.monotonic()
    results = finish(start_waiters(count), timeout=120 + 2 * count)
    elapsed = time.monotonic() - started
    jobs = jobs_by_requester(settings)
    paths = []
    for n, (code, out, err) in enumerate(results):
        assert code == 0, err
        (path,) = out.split()
        job = jobs[f"waiter-{n}"]
        assert path.endswith(job["output_path"]) and os.path.exists(path)  # its own image
        paths.append(path)
    assert len(set(paths)) == count
    assert len(list((settings.assets_dir / "images").rglob("*.png"))) == count
    runs = Counter(run["prompt_id"] for run in comfy.runs)
    assert set(runs) == {job["id"] for job in jobs.values()} and set(runs.values()) == {1}
    for job in jobs.values():  # claimed, submitted and finished once: no requeue, no adoption
        assert job["kinds"]["submitted"] == 1 and job["kinds"]["succeeded"] == 1, job
        assert not {"requeued", "adopted", "deferred"} & set(job["kinds"]), job
    moved = [err for _code, _out, err in results
             if len({line.split("position ")[1].split(" of")[0]
                     for line in err.splitlines() if "queued (position" in line}) > 1]
    assert moved, "no waiter saw its queue position move"
    print(f"{count} waiting generates, no worker: {elapsed:.1f}s")


def test_the_lock_holder_killed_midway_the_others_still_finish(worker_env, settings, comfy):
    comfy.step_time = 0.15  # long enough to kill the holder while it runs a job
    env = {"ZMM_WORKER_LEASE_S": "2"}
    waiters = start_waiters(12, env=env)
    lock = FileLock(worker_lock_path(settings.home, comfy.url), {})
    pids = {process.pid: n for n, process in enumerate(waiters)}
    with Store(settings.spool_path) as store:
        def running_anothers_job() -> int | None:
            """The holder's pid while it runs (on ComfyUI) a job another waiter waits for."""
            holder = (lock.holder() or {}).get("pid")
            if holder not in pids:
                return None
            return holder if store.conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND progress_value > 0 "
                "AND worker_id LIKE ? AND requester != ?",
                [f"%:{holder}:%", f"waiter-{pids[holder]}"]).fetchone()[0] else None
        try:
            victim = wait_until(running_anothers_job, timeout=60, message="a holder mid-queue")
        except AssertionError:
            finish(waiters, timeout=0)
            raise
        os.kill(victim, signal.SIGKILL)
        waiters[pids[victim]].communicate(timeout=10)
        orphans = [row[0] for row in store.conn.execute(
            "SELECT requester FROM jobs WHERE status = 'running' AND worker_id LIKE ?",
            [f"%:{victim}:%"])]
    results = finish([p for p in waiters if p.pid != victim], timeout=120)
    for code, out, err in results:
        assert code == 0, err
        assert out.strip().endswith(".png")
    jobs = jobs_by_requester(settings)
    survivors = {name: job for name, job in jobs.items() if name != f"waiter-{pids[victim]}"}
    assert all(job["status"] == "succeeded" for job in survivors.values())
    runs = Counter(run["prompt_id"] for run in comfy.runs if run["status"] == "success")
    assert all(runs[job["id"]] == 1 for job in survivors.values())  # adopted, not run again
    adopted = [name for name in orphans if name in survivors]
    assert adopted, f"the killed holder left no other waiter's job behind: {orphans}"
    assert all(jobs[name]["kinds"]["adopted"] == 1 for name in adopted)


def test_ctrl_c_on_a_waiting_generate_leaves_its_job_queued(worker_env, settings, comfy):
    comfy.step_time = 0.5
    waiter = LiveProcess("generate", "interrupted", "--steps", "20", "--size", "64x64")
    with Store(settings.spool_path) as store:
        try:
            wait_until(lambda: store.conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND progress_value > 0"
            ).fetchone()[0], timeout=30, message="the job sampling")
        finally:
            waiter.signal(signal.SIGINT)
        assert waiter.wait(timeout=30) == 130
        assert any("stay queued" in line for line in waiter.stderr)
        (status,) = store.conn.execute("SELECT status FROM jobs").fetchone()
    assert status == "queued"


def test_wait_without_a_worker_says_so_once_and_times_out(worker_env, settings):
    job_id = run_zmm("generate", "later", "--no-wait").stdout.strip()
    result = run_zmm("wait", job_id, "--timeout", "1.5")
    assert result.returncode == 8, result.stderr
    assert result.stderr.count("no worker is running: start one with `zmm serve-worker`") == 1
    with Store(settings.spool_path) as store:
        assert store.get(job_id).status == "queued"  # wait never runs jobs itself


def test_wait_with_a_worker_running_says_nothing_about_it(worker_env, settings, comfy):
    worker = LiveProcess("serve-worker", "--no-progress")
    try:
        worker.wait_for_line("connected to ComfyUI")
        job_id = run_zmm("generate", "soon", *GENERATE, "--no-wait").stdout.strip()
        result = run_zmm("wait", job_id, "--json", "--timeout", "30")
    finally:
        worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobs"][0]["status"] == "succeeded"
    assert "no worker is running" not in result.stderr
