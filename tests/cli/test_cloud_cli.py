"""`zmm generate --backend cloud / --allow-cloud` and `zmm history` over cloud
jobs, as real `zmm` processes against the fake Stability and OpenAI servers
(ComfyUI is not running at all)."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import LiveProcess, run_zmm, wait_until
from tests.fakes.openai_images import FakeOpenAI
from tests.fakes.stability import FakeStability
from zmm.config import load
from zmm.store import Store


@pytest.fixture
def cloud_env(home):
    with FakeStability() as stability, FakeOpenAI() as openai:
        env = {"ZMM_HOME": str(home), "ZMM_WORKER_POLL_S": "0.05",  # ComfyUI: a closed port
               "ZMM_STABILITY_URL": stability.url, "ZMM_OPENAI_URL": openai.url,
               "STABILITY_API_KEY": stability.key, "OPENAI_API_KEY": openai.key}
        yield env, stability, openai


@pytest.mark.slow
def test_generate_backend_cloud_prints_the_path_without_comfyui(cloud_env, home):
    env, stability, _ = cloud_env
    result = run_zmm("generate", "a lighthouse", "--backend", "cloud", "--aspect", "16:9",
                     env=env)
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert path.endswith(".png") and open(path, "rb").read(4) == b"\x89PNG"
    assert stability.requests[0]["fields"]["aspect_ratio"] == "16:9"
    assert "unreachable" not in result.stderr  # ComfyUI was never asked
    listed = json.loads(run_zmm("history", "--backend", "stability", "--json", env=env).stdout)
    assert listed["total"] == 1 and listed["jobs"][0]["cost_usd"] == 0.03
    assert listed["jobs"][0]["backend_requested"] == "cloud"
    again = run_zmm("generate", "another", "--backend", "cloud", "--quality", "high", env=env)
    assert again.returncode == 0, again.stderr
    summed = json.loads(run_zmm("history", "--json", env=env).stdout)
    assert summed["total"] == 2 and summed["cost_usd"] == 0.11  # core 3 + ultra 8 credits
    assert json.loads(run_zmm("history", "--backend", "local", "--json", env=env).stdout)[
        "cost_usd"] == 0.0
    text = run_zmm("history", env=env)
    assert "cost $0.1100 in all" in text.stderr and "\tstability\t" in text.stdout


@pytest.mark.slow
def test_allow_cloud_critical_job_falls_back_at_once_when_comfyui_is_down(cloud_env):
    env, stability, _ = cloud_env
    result = run_zmm("generate", "a tower", "--allow-cloud", "--priority", "CRITICAL", "--json",
                     env=env)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    assert job["status"] == "succeeded" and job["backend"] == "stability"
    assert job["cloud_allowed"] is True


@pytest.mark.slow
def test_without_permission_comfyui_down_is_still_exit_4(cloud_env):
    env, stability, openai = cloud_env
    result = run_zmm("generate", "a tower", "--priority", "CRITICAL", env=env)
    assert result.returncode == 4
    assert "unreachable" in result.stderr
    assert stability.requests == [] and openai.requests == []


@pytest.mark.slow
def test_cloud_enabled_in_config_but_backend_local_stays_local(cloud_env, home):
    env, stability, _ = cloud_env
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[cloud]\nenabled = true\n")
    local = run_zmm("generate", "x", "--backend", "local", "--no-wait", "--json", env=env)
    auto = run_zmm("generate", "x", "--no-wait", "--json", env=env)
    assert json.loads(local.stdout)["jobs"][0]["cloud_allowed"] is False
    assert json.loads(auto.stdout)["jobs"][0]["cloud_allowed"] is True


@pytest.mark.slow
def test_cloud_job_failure_is_exit_1_with_each_providers_reason(cloud_env):
    env, stability, openai = cloud_env
    stability.fail_next("payment_required")
    openai.fail_next("moderation_blocked")
    result = run_zmm("generate", "x", "--backend", "cloud", env=env)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "no cloud provider could take it: stability: 402 payment_required" in error[0]
    assert "openai: 400 moderation_blocked" in error[0]


@pytest.mark.slow
def test_no_key_set_fails_a_cloud_job_with_the_variable_to_set(cloud_env):
    env, stability, _ = cloud_env
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    result = run_zmm("generate", "x", "--backend", "cloud", env={**env, "STABILITY_API_KEY": "",
                                                                 "OPENAI_API_KEY": ""})
    assert result.returncode == 1 and stability.requests == []
    assert "stability: $STABILITY_API_KEY is not set; openai: $OPENAI_API_KEY is not set" \
        in result.stderr


@pytest.mark.slow
def test_kill_9_during_a_cloud_request_loses_nothing(cloud_env, home):
    """A worker killed while a provider generates: the next worker takes the job
    back (using an attempt: the lost request may have been billed) and runs it
    again; it ends succeeded once, with one image."""
    env, stability, _ = cloud_env
    env = {**env, "ZMM_WORKER_LEASE_S": "1.5"}
    (job_id,) = run_zmm("generate", "x", "--backend", "cloud", "--no-wait", env=env).stdout.split()
    stability.latency = 30.0
    first = LiveProcess("serve-worker", "--no-progress", env=env)
    wait_until(lambda: stability.requests, timeout=20)
    first.kill()
    first.wait()
    stability.latency = 0.0
    second = LiveProcess("serve-worker", "--no-progress", env=env)
    try:
        with Store(load(home).spool_path) as store:
            job = wait_until(lambda: (j := store.get(job_id)).status == "succeeded" and j,
                             timeout=30)
            events = [(e["kind"], e["message"]) for e in store.events(job_id)]
    finally:
        second.signal(signal.SIGINT)
        assert second.wait() == 0
    assert job.attempts == 1 and job.backend == "stability" and len(stability.requests) == 2
    assert ("requeued", "its worker died during a cloud request") in events
    assert [p.name for p in (home / "assets").rglob("*.png")] == [f"{job_id}.png"]
