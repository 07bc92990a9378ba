"""Completion scripts: generated from the app, never stale, and they complete."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from zmm.cli import completion


def test_completion_scripts_are_current():
    for name, text in completion.scripts().items():
        path = ROOT / "completions" / name
        assert path.exists(), f"missing {path}; run `python -m zmm.cli.completion`"
        assert path.read_text() == text, f"{path} is stale; run `python -m zmm.cli.completion`"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("words,cword,expected", [
    ("zmm queue c", 2, "cancel"),
    ("zmm gen", 1, "generate"),
    ("zmm generate x --qua", 3, "--quality"),  # --qu: --quality and --quiet
    ("zmm history sh", 2, "show"),
])
def test_bash_completion_completes(words, cword, expected):
    script = (f"source {ROOT / 'completions' / 'zmm.bash'}; COMP_WORDS=({words}); "
              f"COMP_CWORD={cword}; _zmm; echo \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected]
