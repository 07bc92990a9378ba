"""`zmm serve-worker --all` as real processes: one child per backend draining
one spool through two fake ComfyUI servers; SIGINT to the parent stops both
children cleanly (each finishes its running job), no job is lost or run twice,
and both backends' rows end `stopped`."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import LedgerFile
from tests.fakes.vram import GIB, VramLedger
from zmm import config, intake
from zmm.store import Store


@pytest.mark.slow
def test_serve_all_drains_with_two_backends_and_stops_both_on_sigint(home, tmp_path):
    ledgers = [VramLedger(total_bytes=24 * GIB), VramLedger(total_bytes=16 * GIB)]
    fakes = [FakeComfyUI(step_time=0.02, ledger=ledger, output_dir=tmp_path / f"comfy-{n}").start()
             for n, ledger in enumerate(ledgers)]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[[backends]]\nname = "gpu0"\nurl = "{fakes[0].url}"\ngpu = 0\n\n'
        f'[[backends]]\nname = "remote1"\nurl = "{fakes[1].url}"\n')
    nvml = tmp_path / "nvml.json"
    LedgerFile(ledgers[0], nvml)  # GPU 0 for the local backend; the remote reads /system_stats
    settings = config.load(home)
    with Store(settings.spool_path) as store:
        ids = [job.id for job in store.enqueue(intake.build(
            {"prompt": "fleet", "size": "64x64", "steps": "4", "count": 40}, settings))]
    parent = LiveProcess("serve-worker", "--all", env={
        "ZMM_WORKER_POLL_S": "0.05", "ZMM_TEST_NVML": str(nvml)})
    try:
        with Store(settings.spool_path) as store:
            def succeeded_on_both() -> bool:
                rows = store.conn.execute(
                    "SELECT comfy_url, COUNT(*) FROM jobs WHERE status = 'succeeded' "
                    "GROUP BY comfy_url").fetchall()
                return len(rows) == 2 and all(count >= 3 for _, count in rows)

            wait_until(succeeded_on_both, timeout=60, interval=0.1,
                       message=f"jobs done on both servers; stderr {parent.stderr[-5:]}")
            rows = {row["name"]: row for row in store.backends()}
            assert rows["gpu0"]["state"] == "up" and rows["remote1"]["state"] == "up"
            assert rows["gpu0"]["vram_total_bytes"] == 24 * GIB  # NVML index 0
            assert rows["remote1"]["vram_total_bytes"] == 16 * GIB  # its /system_stats
            workers = {w["backend"]: w for w in store.live_workers(lease_s=3600.0)}
            assert set(workers) == {"gpu0", "remote1"} and parent.process.pid not in {
                w["pid"] for w in workers.values()}
        parent.signal(signal.SIGINT)
        code = parent.wait(60)
    finally:
        if parent.process.poll() is None:
            parent.kill()
        for fake in fakes:
            fake.stop()
    assert code == 0, parent.stderr[-10:]
    with Store(settings.spool_path) as store:
        jobs = store.get_many(ids)
        rows = {row["name"]: row for row in store.backends()}
        assert store.live_workers(lease_s=3600.0) == []
    statuses = Counter(job.status for job in jobs)
    assert set(statuses) <= {"succeeded", "queued"} and statuses["succeeded"] >= 6
    assert all(job.attempts == 0 for job in jobs)  # a drain finishes what runs: nothing lost
    runs = Counter(run["prompt_id"] for fake in fakes for run in fake.runs
                   if run["status"] == "success")
    assert set(runs.values()) == {1}  # nothing ran twice
    assert {job.id for job in jobs if job.status == "succeeded"} == set(runs)
    assert {name: (row["state"], row["worker_id"]) for name, row in rows.items()} == {
        "gpu0": ("stopped", None), "remote1": ("stopped", None)}
    prefixed = [line for line in parent.stderr if line.startswith(("[gpu0] ", "[remote1] "))]
    assert any(line.startswith("[gpu0] worker stopped: ") for line in prefixed)
    assert any(line.startswith("[remote1] worker stopped: ") for line in prefixed)
    assert not any(line.startswith(("[gpu0] Traceback", "[remote1] Traceback"))
                   for line in parent.stderr)


@pytest.mark.slow
def test_serve_all_passes_json_logging_on_and_each_line_names_its_backend(home, tmp_path):
    fakes = [FakeComfyUI(step_time=0.01, output_dir=tmp_path / f"comfy-{n}").start()
             for n in range(2)]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[[backends]]\nname = "gpu0"\nurl = "{fakes[0].url}"\n\n'
        f'[[backends]]\nname = "remote1"\nurl = "{fakes[1].url}"\n')
    settings = config.load(home)
    with Store(settings.spool_path) as store:
        store.enqueue(intake.build({"prompt": "fleet", "size": "64x64", "steps": "2",
                                    "count": 2}, settings))
    try:
        result = run_zmm("serve-worker", "--all", "--once", "--log-format", "json",
                         "--log-level", "info", env={"ZMM_WORKER_POLL_S": "0.05"}, timeout=90)
    finally:
        for fake in fakes:
            fake.stop()
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    children = [line for line in lines if "backend" in line]
    assert {line["backend"] for line in children} == {"gpu0", "remote1"}
    stopped = {line["backend"] for line in children if line.get("event") == "stopped"}
    assert stopped == {"gpu0", "remote1"}
    assert any(line["message"].startswith("serving 2 backend(s)") for line in lines)
    succeeded = [line for line in children if line.get("status") == "succeeded"]
    assert len(succeeded) == 2
