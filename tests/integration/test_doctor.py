"""`zmm doctor` against the fake servers, and a spool locked by another process."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import run_zmm
from zmm.store import Store
from zmm.store.db import migrations


@pytest.mark.slow
def test_doctor_all_good_but_warnings(home, settings, comfy):
    Store(settings.spool_path).close()
    result = run_zmm("doctor", "--json")  # Ollama: a closed port; NVML: no driver
    data = json.loads(result.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert result.returncode == 0 and data["ok"] is True
    version = len(migrations())
    assert checks["spool"]["status"] == "ok"
    assert f"integrity ok, schema {version}/{version}" in checks["spool"]["detail"]
    assert checks["schema"] == {"check": "schema", "status": "ok", "detail":
                                f"tables, columns, indexes and triggers of schema {version}"}
    assert checks["comfyui"]["detail"].endswith("ComfyUI 0.3.64 on cpu")
    assert checks["template sdxl-txt2img"]["status"] == "ok"
    assert checks["family flux-dev"]["status"] == "ok"
    assert checks["ollama"]["status"] == "warn" and checks["nvml"]["status"] == "warn"


@pytest.mark.slow
def test_doctor_warns_of_a_family_no_tier_uses_and_fails_one_a_tier_uses(home, settings, comfy):
    env = {"ZMM_OLLAMA_ENABLED": "false"}
    comfy.set_model_files("vae", [])  # neither Flux nor SD3.5 can load
    result = run_zmm("doctor", "--json", env=env)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0
    assert checks["family flux-dev"]["status"] == "warn"
    assert checks["family flux-dev"]["detail"].startswith("VAE 'ae.safetensors' is not on")
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "config.toml").write_text('[quality.draft]\nmodel = "flux-schnell"\n')
    result = run_zmm("doctor", env=env)
    assert result.returncode == 6 and "fail  family flux-schnell" in result.stdout


@pytest.mark.slow
def test_doctor_exit_code_names_the_worst_failure(home, settings, comfy):
    env = {"ZMM_OLLAMA_ENABLED": "false"}
    comfy.set_checkpoints(["other.safetensors"])
    result = run_zmm("doctor", env=env)
    assert result.returncode == 6
    assert "fail  template sdxl-txt2img" in result.stdout and "other.safetensors" in result.stdout
    comfy.stop()
    assert run_zmm("doctor", env=env).returncode == 4
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.spool_path.write_bytes(b"not a database" * 100)
    assert run_zmm("doctor", env=env).returncode == 7


@pytest.mark.slow
def test_a_locked_spool_is_a_clear_error_not_a_traceback(home, settings):
    Store(settings.spool_path).close()
    holder = sqlite3.connect(settings.spool_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run_zmm("generate", "x", "--no-wait", env={"ZMM_SPOOL_BUSY_TIMEOUT_MS": "300"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 7 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: the spool at {settings.spool_path} stayed locked")
    with Store(settings.spool_path) as store:
        assert store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


@pytest.mark.slow
def test_doctor_reports_cloud_providers_without_calling_them(home, settings, comfy):
    env = {"ZMM_OLLAMA_ENABLED": "false", "STABILITY_API_KEY": "sk-never-shown"}
    checks = {c["check"]: c for c in json.loads(run_zmm("doctor", "--json", env=env).stdout)[
        "checks"]}
    assert checks["cloud"] == {"check": "cloud", "status": "ok", "detail": (
        "stability ready; openai $OPENAI_API_KEY is not set; only jobs queued with "
        "--allow-cloud or --backend cloud")}
    enabled = run_zmm("doctor", env={**env, "ZMM_CLOUD_ENABLED": "true", "STABILITY_API_KEY": ""})
    assert "warn  cloud" in enabled.stdout and "no provider key is set" in enabled.stdout
    assert enabled.returncode == 0
    bad = run_zmm("doctor", env={**env, "ZMM_CLOUD_PROVIDERS": "stability,midjourney"})
    assert bad.returncode == 2 and "cloud.providers: names from stability, openai" in bad.stdout
    assert "sk-never-shown" not in enabled.stdout + bad.stdout


@pytest.mark.slow
def test_a_server_with_only_sd15_is_told_how_to_map_the_tiers_then_passes(home, settings,
                                                                           comfy):
    env = {"ZMM_OLLAMA_ENABLED": "false"}
    comfy.set_checkpoints(["v1-5-pruned-emaonly.safetensors"])
    result = run_zmm("doctor", "--json", env=env)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 6 and checks["template sdxl-txt2img"]["status"] == "fail"
    assert ('under [quality]: standard = { model = "sd15" }; high = { model = "sd15" }'
            in checks["template sdxl-txt2img"]["detail"])
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "config.toml").write_text(
        '[quality]\nstandard = { model = "sd15" }\nhigh = { model = "sd15" }\n')
    result = run_zmm("doctor", "--json", env=env)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0, result.stdout
    assert checks["template sdxl-txt2img"]["status"] == "warn"
    assert checks["template sdxl-txt2img"]["detail"].endswith("; no quality tier uses it")
