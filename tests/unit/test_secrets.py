"""Secrets never reach the spool, webhooks, errors, logs or the managed ComfyUI."""

from __future__ import annotations

import json
import shlex
import stat
import sys

import pytest

from tests.conftest import closed_url, run_zmm, wait_until
from zmm import secrets
from zmm.backends.comfy import ComfyClient
from zmm.errors import ComfyUnavailable
from zmm.outcome import Outcome, OutcomeKind
from zmm.store import Store
from zmm.worker.managed import child
from zmm.worker.managed.supervisor import ManagedSettings, Supervisor
from zmm.worker.observer import QuietObserver
from zmm.worker.outcomes import OutcomeLadder

KEY = "sk-test-0123456789abcdef"


def test_scrub_hides_known_secret_values_and_url_passwords():
    environ = {"STABILITY_API_KEY": KEY, "ZMM_EXTRA_TOKEN": "tok-987654", "PATH": "/usr/bin"}
    text = f"401: bad key {KEY} for tok-987654 at http://bob:hunter22@comfy:8188/x; /usr/bin"
    assert secrets.scrub(text, environ) == \
        "401: bad key *** for *** at http://***@comfy:8188/x; /usr/bin"
    assert secrets.mask_url("http://bob:hunter22@host:1/p") == "http://***@host:1/p"
    assert secrets.mask_url("http://host:1/p") == "http://host:1/p"


def test_a_name_the_settings_give_is_a_secret_too():
    secrets.remember(["MY_PROVIDER_CREDENTIAL"])
    assert secrets.scrub("x secretvalue1 y", {"MY_PROVIDER_CREDENTIAL": "secretvalue1"}) == \
        "x *** y"


def test_the_child_environment_holds_none_of_zmms_secrets():
    environ = {"STABILITY_API_KEY": KEY, "OPENAI_API_KEY": KEY, "ZMM_WEBHOOK_SECRET": KEY,
               "ZMM_SOMETHING_PASSWORD": KEY, "ZMM_HOME": "/h", "PATH": "/bin"}
    assert secrets.child_environment(environ, {"CUDA_VISIBLE_DEVICES": "1"}) == \
        {"ZMM_HOME": "/h", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}


def test_an_error_echoing_the_key_is_stored_and_sent_without_it(settings, monkeypatch):
    monkeypatch.setenv("STABILITY_API_KEY", KEY)
    queued = run_zmm("generate", "--no-wait", "a key", "--webhook", "http://127.0.0.1:9/hook",
                     env={"ZMM_COMFYUI_URL": closed_url()})
    job_id = queued.stdout.strip()
    with Store(settings.spool_path) as store:
        store.claim("w1", lease_s=60, aging_s=600)
        ladder = OutcomeLadder(store, "w1", max_attempts=3, backoff_s=0, observer=QuietObserver(),
                               fall_back=lambda _job, _outcome: False)
        message = f"stability: 401 invalid key {KEY}"
        ladder.record(store.get(job_id), Outcome(OutcomeKind.FAILED, message,
                                                 {"error_message": message}))
        row = store.conn.execute("select error_message from jobs where id = ?",
                                 (job_id,)).fetchone()[0]
        events = [r[0] for r in store.conn.execute("select message from job_events")]
        outbox = [list(r) for r in store.conn.execute("select * from webhook_deliveries")]
    assert row == "stability: 401 invalid key ***"
    assert not any(KEY in (text or "") for text in events)
    assert outbox and not any(KEY in json.dumps(item) for item in outbox)


def test_credentials_in_the_comfyui_url_are_never_echoed():
    client = ComfyClient("http://bob:hunter22@127.0.0.1:9", timeout=1)
    with pytest.raises(ComfyUnavailable) as raised:
        client.ping()
    assert "hunter22" not in str(raised.value) and "***@127.0.0.1:9" in str(raised.value)
    assert "hunter22" in client.ws_url("c") or "bob" in client.ws_url("c")  # still used


def test_a_report_never_shows_a_url_password(settings):
    result = run_zmm("doctor", env={"ZMM_COMFYUI_URL": "http://bob:hunter22@127.0.0.1:9",
                                    "ZMM_OLLAMA_ENABLED": "false"})
    shown = result.stdout + result.stderr
    assert "hunter22" not in shown and "ComfyUI at http://***@127.0.0.1:9 is unreachable" in shown


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_the_managed_child_gets_no_secrets_and_its_files_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ZMM_WEBHOOK_SECRET", KEY)
    script = ("import os, sys, time; print(sorted(k for k in os.environ if 'KEY' in k "
              "or 'SECRET' in k), os.environ.get('EXTRA'), flush=True); time.sleep(60)")
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    managed = ManagedSettings(url="http://127.0.0.1:18998", command=command, cwd="",
                              env={"EXTRA": "given"}, start_timeout_s=5.0, stop_grace_s=2.0,
                              log_max_bytes=1_000_000)
    (tmp_path / "logs").mkdir(mode=0o755)  # as an older zmm left it
    log = tmp_path / "logs" / "comfyui-18998.log"
    supervisor = Supervisor(managed, tmp_path, probe=lambda _url: log.exists()
                            and "given" in log.read_text())
    try:
        supervisor.start()
        assert log.read_text().strip() == "[] given"
        for path, mode in ((tmp_path / "logs", 0o700), (tmp_path / "run", 0o700), (log, 0o600),
                           (supervisor.pid_path, 0o600)):
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
    finally:
        supervisor.stop()
    assert wait_until(lambda: supervisor.owned is None)
    assert child.read_pid_file(supervisor.pid_path) is None
