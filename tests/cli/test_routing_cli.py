"""Routing at the command line: `zmm generate --on NAME`, the enqueue-time check
of a job's model files against every candidate backend (their recorded lists,
or their servers), and why a job waits in `zmm queue` and a waiting generate."""

from __future__ import annotations

import json

import pytest

from tests.conftest import closed_url
from tests.fakes.comfyui import FakeComfyUI
from zmm.jobs import JobState
from zmm.store import Store

SDXL = "checkpoints/sd_xl_base_1.0.safetensors"
SD15 = "checkpoints/v1-5-pruned-emaonly.safetensors"


def configure(home, **urls: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("".join(
        f'[[backends]]\nname = "{name}"\nurl = "{url}"\n\n' for name, url in urls.items()))


def job_count(settings) -> int:
    if not settings.spool_path.exists():
        return 0
    with Store(settings.spool_path) as store:
        return store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


@pytest.fixture
def backends(home, settings):
    """gpu0 (SDXL) and gpu1 (SD1.5), both with recorded lists and a live worker;
    their servers do not answer."""
    urls = {"gpu0": closed_url(), "gpu1": closed_url()}
    configure(home, **urls)
    with Store(settings.spool_path) as store:
        store.record_backend_files("gpu0", urls["gpu0"], [SDXL, "loras/a.safetensors"])
        store.record_backend_files("gpu1", urls["gpu1"], [SD15])
        store.register_worker("w0", urls["gpu0"], "idle", backend="gpu0")
        store.register_worker("w1", urls["gpu1"], "idle", backend="gpu1")
    return urls


def test_on_an_unknown_backend_is_exit_3_with_the_list_and_nothing_written(cli, backends,
                                                                            settings):
    before = job_count(settings)
    result = cli("generate", "x", "--on", "gpu9", "--no-wait")
    assert result.exit_code == 3
    assert "backend 'gpu9' is not configured; backends: gpu0, gpu1" in result.stderr
    assert job_count(settings) == before


def test_on_pins_the_job_and_from_files_carry_it_per_line(cli, backends, settings, tmp_path):
    result = cli("generate", "x", "--on", "gpu1", "--model", "sd15", "--no-wait")
    assert result.exit_code == 0, result.stderr
    with Store(settings.spool_path) as store:
        assert store.get(result.stdout.strip()).on_backend == "gpu1"
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"prompt": "a", "on": "gpu0"}\n{"prompt": "b", "on": "nowhere"}\n')
    before = job_count(settings)
    result = cli("generate", "--from", str(lines), "--no-wait")
    assert result.exit_code == 3 and "line 2: backend 'nowhere' is not configured" in result.stderr
    assert job_count(settings) == before


def test_a_model_on_no_backend_is_refused_naming_what_each_has(cli, backends, settings):
    before = job_count(settings)
    result = cli("generate", "x", "--model", "other.safetensors", "--family", "sdxl",
                 "--no-wait")
    assert result.exit_code == 3, result.stderr
    assert ("checkpoint 'other.safetensors' is on no backend; gpu0 has: "
            "sd_xl_base_1.0.safetensors; gpu1 has: v1-5-pruned-emaonly.safetensors") \
        in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    result = cli("generate", "x", "--model", "sdxl", "--lora", "b.safetensors", "--no-wait")
    assert result.exit_code == 3 and "LoRA 'b.safetensors' is on no backend" in result.stderr
    assert job_count(settings) == before


def test_a_pinned_job_is_checked_against_its_backend_only(cli, backends, settings):
    result = cli("generate", "x", "--model", "sdxl", "--on", "gpu1", "--no-wait")
    assert result.exit_code == 3
    assert "checkpoint 'sd_xl_base_1.0.safetensors' is not on backend gpu1" in result.stderr
    assert cli("generate", "x", "--model", "sdxl", "--on", "gpu0", "--no-wait").exit_code == 0
    assert cli("generate", "x", "--model", "sd15", "--no-wait").exit_code == 0


def test_on_takes_a_backend_a_worker_reported_that_is_not_configured(cli, backends, settings,
                                                                      tmp_path):
    """A `serve-worker --comfyui URL` backend: pinned by the name it reported, its
    recorded files checked; an unknown name lists configured and reported ones."""
    with Store(settings.spool_path) as store:
        store.record_backend_files("127-0-0-1-8190", closed_url(), [SD15])
    result = cli("generate", "x", "--model", "sd15", "--on", "127-0-0-1-8190", "--no-wait")
    assert result.exit_code == 0, result.stderr
    with Store(settings.spool_path) as store:
        assert store.get(result.stdout.strip()).on_backend == "127-0-0-1-8190"
    result = cli("generate", "x", "--model", "sdxl", "--on", "127-0-0-1-8190", "--no-wait")
    assert result.exit_code == 3
    assert "checkpoint 'sd_xl_base_1.0.safetensors' is not on backend 127-0-0-1-8190" \
        in result.stderr
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"prompt": "a", "model": "sd15", "on": "127-0-0-1-8190"}\n'
                     '{"prompt": "b", "on": "nowhere"}\n')
    before = job_count(settings)
    result = cli("generate", "--from", str(lines), "--no-wait")
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == ("error: line 2: backend 'nowhere' is not configured; "
                                             "backends: gpu0, gpu1, 127-0-0-1-8190")
    assert job_count(settings) == before

def test_a_backend_without_a_recorded_list_is_asked(cli, home, settings, tmp_path):
    fake = FakeComfyUI(checkpoints=["on-the-server.safetensors"],
                       output_dir=tmp_path / "out").start()
    try:
        configure(home, gpu0=closed_url(), gpu1=fake.url)
        with Store(settings.spool_path) as store:
            store.record_backend_files("gpu0", "http://unused", [SDXL])
        result = cli("generate", "x", "--model", "sd15", "--no-wait")
        assert result.exit_code == 3
        assert "gpu0 has: sd_xl_base_1.0.safetensors; gpu1 has: on-the-server.safetensors" \
            in result.stderr
        result = cli("generate", "x", "--model", "on-the-server.safetensors", "--family",
                     "sdxl", "--no-wait")
        assert result.exit_code == 0, result.stderr
    finally:
        fake.stop()


def test_an_unknown_list_on_an_unreachable_server_is_no_refusal(cli, home, settings):
    configure(home, gpu0=closed_url(), gpu1=closed_url())
    with Store(settings.spool_path) as store:
        store.record_backend_files("gpu0", "http://unused", [SDXL])
    result = cli("generate", "x", "--model", "sd15", "--no-wait")
    assert result.exit_code == 0, result.stderr  # gpu1 may have it: the job waits


def test_a_job_that_may_go_to_the_cloud_is_not_refused(cli, backends):
    result = cli("generate", "x", "--model", "flux-dev", "--allow-cloud", "--no-wait")
    assert result.exit_code == 0, result.stderr


def test_queue_says_why_a_job_no_live_backend_can_run_waits(cli, backends, settings):
    stranded = cli("generate", "x", "--model", "flux-dev", "--allow-cloud", "--no-wait")
    runnable = cli("generate", "x", "--model", "sdxl", "--no-wait")
    with Store(settings.spool_path) as store:
        store.unregister_worker("w1")  # gpu1 has no live worker now
    pinned = cli("generate", "x", "--model", "sd15", "--on", "gpu1", "--no-wait")
    result = cli("queue", "--json")
    assert result.exit_code == 0, result.stderr
    reasons = {job["id"]: job["waiting_reason"] for job in json.loads(result.stdout)["queued"]}
    assert reasons == {
        stranded.stdout.strip(): "no backend has flux1-dev.safetensors",
        runnable.stdout.strip(): None,
        pinned.stdout.strip(): "no backend serves it: pinned to gpu1, which has no live worker"}
    text = cli("queue").stdout
    assert "queued (no backend has flux1-dev.safetensors)" in text


def test_a_waiting_generate_says_the_reason_once(cli, backends, settings):
    result = cli("generate", "x", "--model", "flux-dev", "--allow-cloud", "--no-inline",
                 "--timeout", "2.5")
    assert result.exit_code == 8
    told = [line for line in result.stderr.splitlines()
            if "waits: no backend has flux1-dev.safetensors" in line]
    assert len(told) == 1, result.stderr


def test_a_job_no_backend_can_run_has_no_eta_and_takes_no_place_ahead(cli, backends, settings):
    done = cli("generate", "x", "--model", "sdxl", "--no-wait").stdout.strip()
    with Store(settings.spool_path) as store:  # one 10 s job done: the typical time
        store.claim("w0", lease_s=60, aging_s=600, only_ids=[done])
        store.transition(done, JobState.SUCCEEDED, expect=JobState.RUNNING,
                         generation_time_s=10.0)
    stranded = cli("generate", "x", "--model", "flux-dev", "--allow-cloud", "--no-wait")
    runnable = cli("generate", "x", "--model", "sdxl", "--no-wait")
    queued = json.loads(cli("queue", "--json").stdout)["queued"]
    etas = {job["id"]: job["eta_s"] for job in queued}
    assert etas == {stranded.stdout.strip(): None, runnable.stdout.strip(): 10.0}
    assert [job["needs"] for job in queued if job["id"] == runnable.stdout.strip()] == [[SDXL]]
    rows = {line.split()[1]: line.split()[-1] for line in cli("queue").stdout.splitlines()[1:]}
    assert rows[stranded.stdout.strip()] == "-" and rows[runnable.stdout.strip()] == "10s"
