"""docs/scripting.md's CI script and agent loop, run as written against the fake
ComfyUI with real `zmm` processes: every id, path, failure and batch state they
report comes from zmm's JSON; a re-run returns the same jobs (--key)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, LiveProcess, run_zmm

pytestmark = pytest.mark.slow
DOC = ROOT / "docs" / "scripting.md"
FAST = ("--model", "sd15", "--size", "512x512", "--steps", "2")


def documented(marker: str) -> str:
    """The code block under `<!-- tested: marker -->` in docs/scripting.md."""
    found = re.search(rf"<!-- tested: {marker} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S)
    assert found, f"docs/scripting.md has no block marked {marker}"
    return found.group(1) + "\n"


@pytest.fixture
def shell_env(tmp_path, worker_env):
    """PATH with a `zmm` that is this tree's, and the fake ComfyUI's URL."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "zmm"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m zmm "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, **worker_env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "ZMM_OLLAMA_ENABLED": "false"}


def history(env: dict, *args: str) -> dict:
    done = run_zmm("history", *args, "--limit", "1000", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_ci_script_places_ten_named_images_and_a_rerun_queues_nothing(tmp_path, shell_env,
                                                                          comfy):
    script = tmp_path / "banners.sh"
    script.write_text(documented("ci-script"))
    out = tmp_path / "images"
    env = {**shell_env, "OUT_DIR": str(out), "CI_PIPELINE_ID": "42"}

    def run() -> tuple[int, dict]:
        done = subprocess.run(["bash", str(script), *FAST], env=env, capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        return done.returncode, json.loads((tmp_path / "images.json").read_text())

    comfy.fail_next_execution(message="sampler exploded")
    code, first = run()
    assert code == 1  # one job failed: the documented exit
    jobs = {job["name"]: job for job in first["jobs"]}
    assert sorted(jobs) == [f"banner-{n:02d}" for n in range(1, 11)]
    failed = [job for job in first["jobs"] if job["status"] != "succeeded"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    assert "sampler exploded" in failed[0]["error_message"] and failed[0]["out_files"] == []
    assert failed[0]["error_kind"] == "execution"
    for name, job in jobs.items():
        if job["status"] == "succeeded":
            assert job["out_files"] == [str(out / f"{name}.png")]
            assert Path(job["out_files"][0]).read_bytes() == Path(job["output_file"]).read_bytes()
        assert job["idempotency_key"] == f"release-42/{name}"
        assert job["batch_id"] == first["batch_id"] is not None
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{name}.png" for name, job in jobs.items() if job["status"] == "succeeded")

    code, again = run()  # the CI step retried: the same jobs, nothing queued
    assert code == 1
    assert [job["id"] for job in again["jobs"]] == [job["id"] for job in first["jobs"]]
    assert again["batch_id"] == first["batch_id"]
    assert history(env)["total"] == 10

    retried = run_zmm("queue", "retry", failed[0]["id"], "--json", env=env)
    assert retried.returncode == 0, retried.stderr
    code, last = run()
    assert code == 0 and all(job["status"] == "succeeded" for job in last["jobs"])
    assert (out / f"{failed[0]['name']}.png").is_file() and len(list(out.iterdir())) == 10
    batch = history(env, "--batch", first["batch_id"])
    assert batch["total"] == 10 and {job["status"] for job in batch["jobs"]} == {"succeeded"}


def test_the_agent_loop_matches_results_to_tasks_by_name(tmp_path, shell_env, comfy):
    agent = tmp_path / "agent.py"
    agent.write_text(documented("agent-loop"))
    worker = LiveProcess("serve-worker", "--no-progress", env=shell_env)
    try:
        comfy.fail_next_execution(message="out of ideas")
        done = subprocess.run([sys.executable, str(agent), *FAST], env=shell_env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    finally:
        worker.signal(signal.SIGINT)
        assert worker.wait() in (0, 1)
    assert done.returncode == 1, done.stderr  # one task failed
    results = json.loads(done.stdout)
    assert sorted(results) == ["calm", "intro", "storm"]
    failed = [name for name, result in results.items() if result["status"] == "failed"]
    assert len(failed) == 1 and "out of ideas" in results[failed[0]]["error"]
    assert results[failed[0]]["kind"] == "execution"
    for name, result in results.items():
        if name not in failed:
            assert result == {"status": "succeeded", "error": None, "kind": None,
                              "files": [str(tmp_path / "illustrations" / f"{name}.png")]}
            assert Path(result["files"][0]).is_file()
    batch = history(shell_env, "--batch", history(shell_env)["jobs"][0]["batch_id"])
    assert sorted(job["name"] for job in batch["jobs"]) == ["calm", "intro", "storm"]
    cancel = run_zmm("queue", "cancel", "--batch", batch["jobs"][0]["batch_id"], "--json",
                     env=shell_env)  # every job finished: reported, not an error
    assert cancel.returncode == 0, cancel.stderr
    assert sorted(item["status"] for item in json.loads(cancel.stdout)["results"]) == sorted(
        job["status"] for job in batch["jobs"])
