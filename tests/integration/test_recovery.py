"""Recovery after a worker dies (kill -9), with real `zmm serve-worker` processes
against the fake ComfyUI, whose queue keeps running a dead client's prompts as
the real one does: the next worker to take the lock adopts the dead worker's
jobs at once (not a lease later), finishes them through /history, and submits
nothing new while they are on the server."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until
from zmm import intake
from zmm.store import Store
from zmm.timestamps import parse_iso

# Leases far longer than any test: whatever is adopted was adopted through the lock.
LONG_LEASE = {"ZMM_WORKER_LEASE_S": "600"}


def enqueue(settings, count: int, steps: str) -> list[str]:
    with Store(settings.spool_path) as store:
        specs = intake.build({"prompt": "recovery", "size": "64x64", "steps": steps,
                              "count": count}, settings)
        return [job.id for job in store.enqueue(specs)]


def adopted_at(store: Store, job_id: str) -> float | None:
    stamps = [parse_iso(e["at"]) for e in store.events(job_id) if e["kind"] == "adopted"]
    return stamps[0] if stamps else None


@pytest.mark.slow
def test_once_adopts_the_killed_workers_running_and_ahead_jobs_at_start(worker_env, settings,
                                                                         comfy):
    comfy.step_time = 0.2
    first, second = enqueue(settings, count=2, steps="15")  # 3 s each on the fake
    worker = LiveProcess("serve-worker", "--no-progress", env=LONG_LEASE)
    wait_until(lambda: len(comfy.submissions) == 2 and comfy.queue_ids()[0] == [first],
               timeout=30, message="one job running and one submitted ahead")
    worker.kill()
    worker.wait()
    assert comfy.queue_ids() == ([first], [second])  # a dead client's prompts keep running
    spawned = time.time()
    once = run_zmm("serve-worker", "--once", "--no-progress", env=LONG_LEASE, timeout=60)
    assert once.returncode == 0, once.stderr
    assert "worker stopped: 2 succeeded, 0 other" in once.stderr
    with Store(settings.spool_path) as store:
        jobs = store.get_many([first, second])
        delays = [adopted_at(store, job.id) - spawned for job in jobs]
    assert [(job.status, job.attempts) for job in jobs] == [("succeeded", 0)] * 2
    assert len(comfy.submissions) == 2, "nothing submitted again"
    assert comfy.deepest == 2
    files = sorted(p.name for p in (settings.assets_dir / "images").rglob("*.png"))
    assert files == sorted(f"{job_id}.png" for job_id in (first, second))
    # Process start (interpreter and imports included) to adoption; well under a second
    # of that is the worker's own.
    assert max(delays) < 3.0, delays
    print(f"adopted {max(delays):.3f}s after the --once process was spawned")


@pytest.mark.slow
def test_ten_kill_9_restarts_then_once_every_job_once_queue_never_deeper_than_two(
        worker_env, settings, comfy):
    comfy.step_time = 0.1
    ids = enqueue(settings, count=10, steps="5")  # 0.5 s each on the fake
    rng = random.Random(21)
    for _ in range(10):
        worker = LiveProcess("serve-worker", "--no-progress", env=LONG_LEASE)
        time.sleep(rng.uniform(0.3, 1.5))  # a random point in its run
        worker.kill()
        worker.wait()
    once = run_zmm("serve-worker", "--once", "--no-progress", env=LONG_LEASE, timeout=120)
    assert once.returncode == 0, once.stderr
    with Store(settings.spool_path) as store:
        statuses = Counter(job.status for job in store.get_many(ids))
        adopted = sum(1 for i in ids for e in store.events(i) if e["kind"] == "adopted")
    assert statuses == {"succeeded": 10}
    success = Counter(run["prompt_id"].split("-r")[0] for run in comfy.runs
                      if run["status"] == "success")
    assert sorted(success) == sorted(ids) and set(success.values()) == {1}
    files = sorted(p.name for p in (settings.assets_dir / "images").rglob("*.png"))
    assert files == sorted(f"{i}.png" for i in ids), "exactly one file per job"
    assert comfy.deepest <= 2, f"ComfyUI held {comfy.deepest} zmm prompts at once"
    print(f"10 jobs, 10 kill -9s, {adopted} adoptions, {len(comfy.submissions)} submissions, "
          f"deepest queue {comfy.deepest}")
