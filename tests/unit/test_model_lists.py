"""The enqueue path's model folder lists (zmm.backends.model_lists) against the fake
ComfyUI: a list where the server answers, None where nothing listens, and a proxy
($http_proxy) asked even when the server's own port is closed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, closed_url
from zmm.backends.model_lists import folder_files


def test_a_server_that_answers_gives_its_folder(make_comfy):
    fake = make_comfy(checkpoints=["a.safetensors", "b.safetensors"])
    assert folder_files(fake.url, "checkpoints") == ["a.safetensors", "b.safetensors"]
    assert folder_files(fake.url, "loras") == []


def test_a_closed_port_is_none():
    assert folder_files(closed_url(), "checkpoints") is None


def test_through_a_proxy_the_servers_own_port_is_not_what_counts(make_comfy, tmp_path):
    """In a process of its own: urllib reads the proxy variables once per process."""
    proxy = make_comfy(checkpoints=["via-proxy.safetensors"])  # answers the proxied GET itself
    code = ("import sys; from zmm.backends.model_lists import folder_files; "
            "print(folder_files(sys.argv[1], 'checkpoints'))")
    env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    result = subprocess.run([sys.executable, "-c", code, closed_url()], cwd=ROOT, timeout=60,
                            env={**env, "http_proxy": proxy.url}, capture_output=True, text=True)
    assert result.stdout == "['via-proxy.safetensors']\n", result.stderr
