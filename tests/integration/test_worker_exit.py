"""A worker that ends badly leaves no job without an owner: one that exits on an
error keeps what adoption needs, and `serve-worker --once` (a real process)
finishes what it left, or what any worker left behind an expired lease."""

from __future__ import annotations

import time

import pytest

from tests.conftest import drive, run_zmm
from tests.workers import make_worker
from zmm import intake
from zmm.backends.comfy import ComfyClient
from zmm.store import Store
from zmm.worker.observer import QuietObserver


class BrokenDisplay(QuietObserver):
    """A display whose terminal went away (a closed pipe) once the job samples."""

    def job_changed(self, inflight) -> None:
        if inflight.phase == "sampling":
            raise BrokenPipeError(32, "Broken pipe")


def enqueue(store, settings) -> str:
    raw = {"prompt": "left behind", "size": "64x64", "steps": "30"}
    (job,) = store.enqueue(intake.build(raw, settings))
    return job.id


@pytest.mark.slow
def test_a_worker_ending_on_an_error_leaves_its_job_to_the_next_worker(worker_env, settings,
                                                                         comfy):
    comfy.step_time = 0.02
    with Store(settings.spool_path) as store:
        job_id = enqueue(store, settings)
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings,
                             observer=BrokenDisplay(), holds_lock=True)
        with pytest.raises(BrokenPipeError):
            worker.run()
        assert store.get(job_id).status == "running"
        assert worker.id in {row["id"] for row in store.live_workers(worker.lease_s)}
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "worker stopped: 1 succeeded, 0 other" in result.stderr
    with Store(settings.spool_path) as store:
        job = store.get(job_id)
        kinds = [event["kind"] for event in store.events(job_id)]
    assert (job.status, job.attempts) == ("succeeded", 0) and len(comfy.submissions) == 1
    assert kinds[-2:] == ["adopted", "succeeded"]


@pytest.mark.slow
def test_once_adopts_an_expired_lease_before_deciding_there_is_nothing_to_do(
        worker_env, settings, comfy):
    """A job running on this server, its lease expired and no worker row to
    prove its worker dead: `--once` follows it to the end instead of exiting."""
    comfy.step_time = 0.01
    hour_ago = lambda: time.time() - 3600  # noqa: E731 - its leases ended long ago
    with Store(settings.spool_path, clock=hour_ago) as store:
        job_id = enqueue(store, settings)
        worker = make_worker(store, ComfyClient(comfy.url, timeout=5), settings)
        drive(worker, lambda: len(comfy.submissions) == 1)
        store.unregister_worker(worker.id)  # gone, without a trace but its job
        worker.client.close()
    result = run_zmm("serve-worker", "--once", "--no-progress", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "worker stopped: 1 succeeded, 0 other" in result.stderr
    with Store(settings.spool_path) as store:
        assert store.get(job_id).status == "succeeded"
    assert len(comfy.submissions) == 1
