"""A backend URL with credentials (http://user:pass@host) is shown masked
wherever zmm shows it: `zmm backends` (and --json), `zmm top`, `zmm doctor`,
`zmm config show` (and --json)."""

from __future__ import annotations

import pytest

from tests.conftest import closed_url
from zmm import config
from zmm.store import Store
from zmm.store.backends import BackendReport

SECRET = "hunter2-in-url"


@pytest.fixture
def with_credentials(home, monkeypatch):
    closed = closed_url()  # nothing listens: no server is asked anything
    comfy = closed.replace("://", f"://ops:{SECRET}@")
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[comfyui]\nurl = "{comfy}"\n\n'
        f'[[backends]]\nname = "gpu0"\nurl = "{comfy}"\n\n'
        f'[[backends]]\nname = "remote1"\nurl = "{comfy.replace("ops", "other")}/x"\n'
        f'ollama = "{closed.replace("://", f"://llm:{SECRET}@")}"\n')
    monkeypatch.delenv("ZMM_COMFYUI_URL", raising=False)
    settings = config.load(home)
    with Store(settings.spool_path) as store:  # a backend no longer configured, still shown
        store.report_backend(BackendReport("old", comfy.replace("ops", "older"), None, None,
                                           "stopped", managed=False, restarts=0))
    return comfy


@pytest.mark.parametrize("argv", [
    ["backends"], ["backends", "--json"], ["top", "--once"], ["doctor"], ["doctor", "--json"],
    ["config", "show"], ["config", "show", "--json"],
])
def test_urls_with_credentials_are_masked(cli, with_credentials, argv):
    result = cli(*argv)
    shown = result.stdout + result.stderr
    assert SECRET not in shown, shown
    assert not any(f"{user}:" in shown for user in ("ops", "other", "older", "llm"))
