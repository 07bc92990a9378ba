"""64 enqueuing processes x 20 jobs, drained by 3 workers on 3 ComfyUI servers:
every job runs exactly once, on exactly one server, with exactly one file."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.conftest import LiveProcess, wait_until, zmm_process
from tests.fakes.comfyui import FakeComfyUI
from zmm.store import Store


@pytest.mark.slow
def test_64_enqueuers_3_workers_3_servers(home, settings, tmp_path):
    fakes = [FakeComfyUI(output_dir=tmp_path / f"comfy-{n}").start() for n in range(3)]
    env = {"ZMM_WORKER_POLL_S": "0.05"}
    workers = [LiveProcess("serve-worker", "--no-progress", "--comfyui", fake.url, env=env)
               for fake in fakes]
    started = time.monotonic()
    try:
        enqueuers = [zmm_process("generate", f"batch {n}", "--count", "20", "--size", "64x64",
                                 "--steps", "1", "--no-wait") for n in range(64)]
        ids: list[str] = []
        for process in enqueuers:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            assert "locked" not in err
            ids += out.split()
        assert len(ids) == 1280 == len(set(ids))
        with Store(settings.spool_path) as store:
            def unfinished() -> int:
                return store.conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status != 'succeeded'").fetchone()[0]
            wait_until(lambda: unfinished() == 0, timeout=400, interval=0.5,
                       message="all 1280 jobs to succeed")
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [worker.wait(60) for worker in workers]
        for fake in fakes:
            fake.stop()
    assert codes == [0, 0, 0]
    runs = Counter(run["prompt_id"] for fake in fakes for run in fake.runs if run["status"] == "success")
    assert set(runs) == set(ids) and set(runs.values()) == {1}
    per_server = [sum(1 for r in fake.runs if r["status"] == "success") for fake in fakes]
    files = list((settings.assets_dir / "images").rglob("*.png"))
    assert len(files) == 1280
    print(f"1280 jobs in {time.monotonic() - started:.1f}s; per server {per_server}; "
          f"duplicates 0; files {len(files)}")
