"""The enqueue path stays light: `zmm generate --no-wait` and `zmm queue --json`
must not import the heavy libraries the other commands need, nor urllib's HTTP
client while no server can be asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("httpx", "rich", "PIL", "pynvml", "websockets", "sqlite_utils", "aiohttp")
# urllib's HTTP client (http.client, email, ssl): only once a server can be asked for its
# model files; here, as in every test, nothing listens on ComfyUI's URL.
HEAVY_STDLIB = ("urllib.request", "http.client")
# What only other inputs need: statistics (with fractions and decimal), csv for a CSV
# `--from`, the UI-format converter, `queue --all`'s history read, the text renderer.
NOT_ON_PATH = ("statistics", "fractions", "decimal", "csv", "zmm.workflows.ui_format",
               "zmm.store.history", "zmm.cli.render")


def imported_modules(args: list[str], home) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "zmm", *args], cwd=ROOT,
                            env={**os.environ, "ZMM_HOME": str(home)}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines}


@pytest.mark.parametrize("args", [["generate", "a fox", "--no-wait"], ["queue", "--json"]],
                         ids=["generate --no-wait", "queue --json"])
def test_enqueue_path_imports_no_heavy_library(home, args):
    modules = imported_modules(args, home)
    assert "zmm.store" in modules  # the check itself works
    loaded = sorted(name for name in modules if name.split(".")[0] in HEAVY
                    or name in HEAVY_STDLIB or name in NOT_ON_PATH)
    assert loaded == [], f"{' '.join(args)} imported {loaded}"


@pytest.mark.slow
def test_a_command_imports_only_its_own_command_module(home):
    # importtime does not log importlib.import_module, so ask the process itself.
    script = ("import runpy, sys\n"
              "sys.argv = ['zmm', 'generate', 'a fox', '--no-wait']\n"
              "try:\n    runpy.run_module('zmm', run_name='__main__')\n"
              "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('zmm.cli'))))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            env={**os.environ, "ZMM_HOME": str(home)}, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "zmm.cli zmm.cli.common zmm.cli.generate"
