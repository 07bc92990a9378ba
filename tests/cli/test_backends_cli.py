"""`zmm backends [--json]`, `drain` / `resume`, and serve-worker's backend flags:
exit codes, one-line errors, the JSON fields (docs/json-output.md)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import closed_url
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import fake_nvml_gpus
from tests.fakes.vram import GIB, VramLedger
from zmm import config, intake
from zmm.backends import gpu
from zmm.jobs import JobState
from zmm.store import Store
from zmm.store.backends import BackendReport
from zmm.views import roster

TWO = """
[[backends]]
name = "gpu0"
url = "http://127.0.0.1:8188"
gpu = 0

[[backends]]
name = "gpu1"
url = "http://127.0.0.1:8189"
gpu = 1
ollama = "http://127.0.0.1:11435"

[[backends]]
name = "box"
url = "http://10.0.0.7:8188"
"""

FIELDS = {"name", "url", "gpu", "remote", "ollama", "state", "worker_state", "worker_id",
          "heartbeat_at", "draining", "managed", "restarts", "vram_total_bytes",
          "vram_free_bytes", "loaded_model", "jobs_running", "jobs_succeeded_last_hour",
          "jobs_failed_last_hour", "last_error", "last_error_at"}


@pytest.fixture
def configured(home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(TWO)
    return home


def by_name(cli) -> dict[str, dict]:
    return {entry["name"]: entry for entry in cli.json("backends", "--json")["backends"]}


def test_every_configured_backend_is_listed_with_no_worker(cli, configured):
    entries = cli.json("backends", "--json")["backends"]
    assert [entry["name"] for entry in entries] == ["gpu0", "gpu1", "box"]
    assert all(set(entry) == FIELDS for entry in entries)
    gpu1, box = entries[1], entries[2]
    assert (gpu1["gpu"], gpu1["remote"], gpu1["ollama"]) == (1, False, "http://127.0.0.1:11435")
    assert (box["gpu"], box["remote"]) == (None, True)
    assert {entry["state"] for entry in entries} == {"no_worker"}


def test_rows_jobs_and_staleness(cli, configured):
    settings = config.load(configured)
    with Store(settings.spool_path) as store:
        store.register_worker("host:1:aa", "http://127.0.0.1:8188", "busy", backend="gpu0")
        store.register_worker("host:2:bb", "http://127.0.0.1:8189", "idle", backend="gpu1")
        store.report_backend(BackendReport(
            "gpu0", "http://127.0.0.1:8188", 0, "host:1:aa", "up", managed=True, restarts=2,
            loaded_model="sd_xl_base_1.0.safetensors", vram_total_bytes=24 * 2**30,
            vram_free_bytes=10 * 2**30, last_error="ComfyUI unreachable: connection refused"))
        store.report_backend(BackendReport("gpu1", "http://127.0.0.1:8189", 1, "host:2:bb",
                                           "down"))
        (done, running, other) = store.enqueue(intake.build(
            {"prompt": "x", "size": "64x64", "count": 3}, settings))
        for job in (done, running):
            store.claim("host:1:aa", lease_s=60, aging_s=600, only_ids=[job.id], backend="gpu0")
            store.update(job.id, comfy_url="http://127.0.0.1:8188")
        store.transition(done.id, JobState.SUCCEEDED, expect=JobState.RUNNING)
    entries = by_name(cli)
    gpu0 = entries["gpu0"]
    assert (gpu0["state"], gpu0["worker_id"], gpu0["managed"], gpu0["restarts"]) == (
        "up", "host:1:aa", True, 2)
    assert (gpu0["vram_free_bytes"], gpu0["vram_total_bytes"]) == (10 * 2**30, 24 * 2**30)
    assert gpu0["loaded_model"] == "sd_xl_base_1.0.safetensors"
    assert (gpu0["jobs_running"], gpu0["jobs_succeeded_last_hour"]) == (1, 1)
    assert gpu0["last_error"].startswith("ComfyUI unreachable") and gpu0["last_error_at"]
    assert entries["gpu1"]["state"] == "down" and entries["gpu1"]["jobs_running"] == 0
    text = cli("backends")
    assert text.exit_code == 0
    assert "up (managed, 2 restarts)" in text.stdout and "10.0/24.0 GB" in text.stdout
    assert "gpu0: last error at" in text.stderr
    # a worker that stopped heartbeating (killed) is no worker
    settings.override("worker.lease_s", 0.001)
    clock_later = Store(settings.spool_path, clock=lambda: 4102444800.0)  # year 2100
    with clock_later as store:
        states = {e["name"]: e["state"] for e in roster.overview(settings, store)}
    assert states == {"gpu0": "no worker", "gpu1": "no worker", "box": "no worker"}


def test_drain_and_resume(cli, configured):
    result = cli("backends", "drain", "gpu1")
    assert result.exit_code == 0 and "gpu1: draining" in result.stdout
    assert "no worker serves gpu1" in result.stderr
    entries = by_name(cli)
    assert entries["gpu1"]["draining"] is True and entries["gpu0"]["draining"] is False
    settings = config.load(configured)
    with Store(settings.spool_path) as store:
        store.register_worker("h:1:a", "http://127.0.0.1:8189", "idle", backend="gpu1")
        store.report_backend(BackendReport("gpu1", "http://127.0.0.1:8189", 1, "h:1:a", "up"))
    assert by_name(cli)["gpu1"]["state"] == "draining"
    assert "no worker, draining" not in cli("backends").stdout
    result = cli("backends", "resume", "gpu1")
    assert result.exit_code == 0 and "gpu1: resumed" in result.stdout
    assert by_name(cli)["gpu1"]["state"] == "up" and by_name(cli)["gpu1"]["draining"] is False


@pytest.mark.parametrize("args", [["backends", "drain", "nope"], ["backends", "resume", "nope"],
                                  ["serve-worker", "--backend", "nope"]])
def test_an_unknown_backend_is_exit_3_with_the_list(cli, configured, args):
    result = cli(*args)
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "error: backend 'nope' is not configured; backends: gpu0, gpu1, box")


def test_serve_worker_with_several_backends_wants_a_choice(cli, configured):
    result = cli("serve-worker")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: several backends are configured (gpu0, gpu1, box): "
                                     "pass --backend NAME or --all")


@pytest.mark.parametrize("args, words", [
    (["--all", "--backend", "gpu0"], "error: --all: serves every backend; not with --backend"),
    (["--comfyui", "http://127.0.0.1:9"], "error: --comfyui: not with [[backends]] in config"),
    (["--launch", "python main.py", "--backend", "gpu0"], "error: --launch: not with"),
])
def test_serve_worker_flag_clashes_are_exit_2(cli, configured, args, words):
    result = cli("serve-worker", *args)
    assert result.exit_code == 2 and result.stderr.startswith(words)


@pytest.mark.parametrize("args", [["backends"], ["backends", "--json"], ["backends", "drain", "a"],
                                  ["serve-worker", "--all"], ["serve-worker", "--backend", "a"],
                                  ["generate", "x", "--no-wait"]])
def test_two_backends_on_one_url_is_one_line_exit_2_and_nothing_queued(cli, home, args):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:8188"\ngpu = 0\n\n'
        '[[backends]]\nname = "b"\nurl = "http://127.0.0.1:8188"\ngpu = 1\n')
    result = cli(*args)
    message = ("config backends[0] (a) and backends[1] (b): both have url "
               "'http://127.0.0.1:8188'; each backend needs its own")
    if "--json" in args:  # the one document carries the error instead of nothing
        assert result.exit_code == 2 and json.loads(result.stdout)["error"] == {
            "code": "usage", "exit_code": 2, "message": message, "hint": None}
    else:
        assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: " + message]
    settings = config.load(home)
    if settings.spool_path.exists():
        with Store(settings.spool_path) as store:
            assert store.run_order(600) == [] and store.backends() == []


def test_doctor_names_the_clash_as_a_config_failure(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:8188"\ngpu = 0\n\n'
        '[[backends]]\nname = "b"\nurl = "http://127.0.0.1:8189"\ngpu = 0\n')
    result = cli("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 2 and checks["backends"]["status"] == "fail"
    assert "both have gpu 0" in checks["backends"]["detail"]


def test_doctor_checks_every_backend_and_its_gpu_index(cli, home, tmp_path):
    fakes = [FakeComfyUI(output_dir=tmp_path / f"out{n}").start() for n in range(2)]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[[backends]]\nname = "gpu0"\nurl = "{fakes[0].url}"\ngpu = 0\n\n'
        f'[[backends]]\nname = "gpu3"\nurl = "{fakes[1].url}"\ngpu = 3\n\n'
        f'[[backends]]\nname = "box"\nurl = "{closed_url()}"\n')
    try:
        with gpu.use_backend(fake_nvml_gpus(VramLedger(total_bytes=24 * GIB))):
            result = cli("doctor", "--json")
    finally:
        for fake in fakes:
            fake.stop()
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["comfyui gpu0"]["status"] == "ok" and checks["comfyui gpu3"]["status"] == "ok"
    assert checks["gpu gpu0"]["status"] == "ok" and "24.0/24.0 GB free" in checks["gpu gpu0"][
        "detail"]
    assert checks["gpu gpu3"] == {"check": "gpu gpu3", "status": "fail", "detail":
                                  "gpu3: gpu 3 is not among NVML's 1 GPU(s) (indexes 0-0)"}
    assert checks["comfyui box"]["status"] == "fail" and checks["gpu box"]["status"] == "ok"
    assert result.exit_code == 2  # the missing GPU is a config error, more serious than 4


def test_workers_of_bare_urls_are_backends_of_their_own_counted_by_name(cli, home):
    """Two `serve-worker --comfyui URL` workers report two rows, never one `default`."""
    settings = config.load(home)
    urls = {"127-0-0-1-8189": "http://127.0.0.1:8189", "127-0-0-1-8190": "http://127.0.0.1:8190"}
    with Store(settings.spool_path) as store:
        jobs = store.enqueue(intake.build({"prompt": "x", "size": "64x64", "count": 3}, settings))
        for (name, url), worker in zip(urls.items(), ("h:1:a", "h:2:b"), strict=True):
            store.register_worker(worker, url, "busy", backend=name)
            store.report_backend(BackendReport(name, url, 0, worker, "up"))
        for job, (worker, name) in zip(jobs, [("h:1:a", "127-0-0-1-8189")] * 2
                                       + [("h:2:b", "127-0-0-1-8190")], strict=True):
            store.claim(worker, lease_s=60, aging_s=600, only_ids=[job.id], backend=name)
            store.update(job.id, comfy_url=urls[name])
        store.transition(jobs[0].id, JobState.SUCCEEDED, expect=JobState.RUNNING)
    entries = by_name(cli)
    assert list(entries) == ["default", "127-0-0-1-8189", "127-0-0-1-8190"]
    assert entries["default"]["state"] == "no_worker"
    first, second = entries["127-0-0-1-8189"], entries["127-0-0-1-8190"]
    assert (first["state"], first["worker_id"], first["url"]) == ("up", "h:1:a", urls[first["name"]])
    assert (first["jobs_running"], first["jobs_succeeded_last_hour"]) == (1, 1)
    assert (second["state"], second["worker_id"], second["jobs_running"]) == ("up", "h:2:b", 1)


def test_a_reported_backend_is_drained_and_resumed_by_name(cli, configured, settings):
    """A `serve-worker --comfyui URL` backend is not configured, yet its name steers it."""
    with Store(settings.spool_path) as store:
        store.report_backend(BackendReport("127-0-0-1-8190", "http://127.0.0.1:8190", 0,
                                           "h:3:c", "up"))
    result = cli("backends", "drain", "127-0-0-1-8190")
    assert result.exit_code == 0, result.stderr
    assert "127-0-0-1-8190: draining" in result.stdout
    assert by_name(cli)["127-0-0-1-8190"]["draining"] is True
    with Store(settings.spool_path) as store:
        assert store.is_draining("127-0-0-1-8190") and not store.is_draining("gpu0")
    assert cli("backends", "resume", "127-0-0-1-8190").exit_code == 0
    assert by_name(cli)["127-0-0-1-8190"]["draining"] is False
    result = cli("backends", "drain", "nope")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "error: backend 'nope' is not configured; backends: gpu0, gpu1, box, 127-0-0-1-8190")
