"""Every row of the README's exit-code table, produced by the case it describes:
real `zmm` processes against the fake ComfyUI (and a closed port for Ollama),
each with `--json`, so each also proves that stdout carries one JSON document
whose `error` names the exit code's word (docs/json-output.md)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, closed_url, run_zmm, wait_until, zmm_process
from zmm.errors import CODE_WORDS
from zmm.store import Store

pytestmark = pytest.mark.slow

README_CODES = sorted(int(code) for code in re.findall(
    r"^\| (\d+) \|", (ROOT / "README.md").read_text().partition("## Exit codes")[2],
    re.MULTILINE))


@pytest.fixture
def env(home, comfy):
    return {"ZMM_HOME": str(home), "ZMM_COMFYUI_URL": comfy.url,
            "ZMM_OLLAMA_URL": closed_url()}


def document(result: subprocess.CompletedProcess) -> dict:
    data = json.loads(result.stdout)  # exactly one document, whatever the exit code
    assert data["schema"] == 2 and data["ok"] is (result.returncode == 0)
    if result.returncode:
        assert data["error"]["code"] == CODE_WORDS[result.returncode]
        assert data["error"]["exit_code"] == result.returncode and data["error"]["message"]
    else:
        assert data["error"] is None
    return data


def queued_one(env) -> str:
    result = run_zmm("generate", "x", "--quality", "draft", "--no-wait", "--json", env=env)
    return document(result)["jobs"][0]["id"]


def case_0(env, comfy):
    result = run_zmm("generate", "x", "--quality", "draft", "--json", env=env)
    assert document(result)["jobs"][0]["status"] == "succeeded"
    return result


def case_1(env, comfy):
    comfy.fail_next_execution()
    result = run_zmm("generate", "x", "--quality", "draft", "--json", env=env)
    (job,) = document(result)["jobs"]
    assert (job["status"], job["error_kind"]) == ("failed", "execution")
    return result


def case_2(env, comfy):
    result = run_zmm("generate", "x", "--steps", "0", "--json", env=env)
    assert document(result)["error"]["message"].startswith("steps: ")
    unknown = run_zmm("generate", "x", "--no-such-flag", "--json", env=env)  # click's own
    assert unknown.returncode == 2 and document(unknown)["error"]["code"] == "usage"
    return result


def case_3(env, comfy):
    return run_zmm("wait", "mmg-20000101-000000-00000000", "--json", env=env)


def case_4(env, comfy):
    down = dict(env, ZMM_COMFYUI_URL=closed_url())
    result = run_zmm("generate", "x", "--quality", "draft", "--json", env=down)
    (job,) = document(result)["jobs"]  # queued before ComfyUI was found down: its id is here
    assert job["id"].startswith("mmg-") and job["status"] == "queued"
    # --enhance=required with Ollama down fails the job, as a backend that is down
    required = run_zmm("generate", "x", "--quality", "draft", "--enhance=required", "--json",
                       env=env)
    assert required.returncode == 4
    assert document(required)["jobs"][0]["error_kind"] == "enhance"
    return result


def case_5(env, comfy):
    job_id = queued_one(env)
    assert run_zmm("queue", "cancel", job_id, env=env).returncode == 0
    result = run_zmm("queue", "cancel", job_id, "--json", env=env)
    assert document(result)["results"][0]["result"] == "already_cancelled"
    return result


def case_6(env, comfy):
    result = run_zmm("generate", "x", "--quality", "draft", "--set", "3.sampler_name=bogus",
                     "--json", env=env)
    (job,) = document(result)["jobs"]
    assert (job["status"], job["error_kind"]) == ("failed", "rejected")
    again = run_zmm("wait", job["id"], "--json", env=env)  # `wait` says the same
    assert again.returncode == 6 and document(again)["jobs"][0]["id"] == job["id"]
    failed = run_zmm("history", "--error-kind", "rejected", "--json", env=env)
    assert [j["id"] for j in document(failed)["jobs"]] == [job["id"]]
    return result


def case_7(env, comfy, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "spool.db").write_bytes(b"this is not a SQLite database" * 100)
    return run_zmm("history", "--json", env=env)


def case_8(env, comfy):
    result = run_zmm("generate", "x", "--no-inline", "--timeout", "0.5", "--json", env=env)
    (job,) = document(result)["jobs"]  # nothing ran it: still queued, and named
    waited = run_zmm("wait", job["id"], "--timeout", "0.5", "--json", env=env)
    assert waited.returncode == 8 and document(waited)["jobs"][0]["id"] == job["id"]
    return result


def case_130(env, comfy, home):
    process = zmm_process("generate", "x", "--no-inline", "--json", env=env)
    try:
        def queued() -> bool:
            if not (home / "spool.db").exists():
                return False
            with Store(home / "spool.db") as store:
                return store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
        wait_until(queued, timeout=20, message="the job queued")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert document(result)["jobs"][0]["status"] == "queued"
    return result


CASES = {0: case_0, 1: case_1, 2: case_2, 3: case_3, 4: case_4, 5: case_5, 6: case_6,
         7: case_7, 8: case_8, 130: case_130}


def test_the_cases_cover_the_readme_table():
    assert README_CODES and set(README_CODES) == set(CASES)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("code", README_CODES)
def test_exit_code(code, env, comfy, home):
    case = CASES[code]
    args = (env, comfy, home) if case.__code__.co_argcount == 3 else (env, comfy)
    result = case(*args)
    assert result.returncode == code, result.stderr
    document(result)
