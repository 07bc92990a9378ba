"""serve-worker's log for operators: JSON lines or text lines on stderr, levels,
and no secret in any line (real `zmm` processes against the fake ComfyUI)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_zmm


def enqueue() -> str:
    queued = run_zmm("generate", "logged", "--no-wait", "--size", "64x64", "--steps", "2")
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.strip()


@pytest.mark.slow
def test_json_lines_one_per_event_without_secrets(worker_env, comfy):
    job_id = enqueue()
    with_password = comfy.url.replace("://", "://ops:hunter2-pass@")
    result = run_zmm("serve-worker", "--once", "--log-format", "json", "--comfyui",
                     with_password, env={"ZMM_WEBHOOK_SECRET": "s3cret-webhook-value"},
                     timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    events = [(line.get("event"), line.get("status")) for line in lines]
    assert ("connected", None) in events and ("job", "succeeded") in events
    assert lines[-1]["message"] == "worker stopped: 1 succeeded, 0 other"
    assert any(line.get("job") == job_id for line in lines)
    assert "hunter2-pass" not in result.stderr and "://***@" in result.stderr
    assert not any(line["level"] == "debug" for line in lines)


@pytest.mark.slow
def test_text_lines_at_the_level_asked(worker_env, comfy):
    enqueue()
    result = run_zmm("serve-worker", "--once", "--log-level", "debug", timeout=60)
    assert result.returncode == 0, result.stderr
    assert " DEBUG zmm.worker: " in result.stderr and " INFO zmm.worker: connected" in result.stderr
    warned = run_zmm("serve-worker", "--once", "--log-level", "warning", timeout=60)
    assert warned.returncode == 0 and warned.stderr == ""


def test_a_bad_log_flag_is_one_error_line(home):
    result = run_zmm("serve-worker", "--log-format", "xml")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "error: --log-format: one of text, json"
