"""The serve extra stays out of every other command: nothing under zmm/serve/,
and none of Starlette, uvicorn or the MCP SDK, is imported unless `zmm serve`
or `zmm mcp` runs."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("zmm.serve", "starlette", "uvicorn", "mcp")
PROBE = ("import sys, runpy\nsys.argv = ['zmm', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('zmm', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print(sorted({m.split('.')[0] if not m.startswith('zmm.') else '.'.join(m.split('.')[:2])"
         " for m in sys.modules}), file=sys.stderr)\n")


def loaded(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    return result.stderr.strip().splitlines()[-1]


def test_other_commands_never_import_the_serve_extra(home):
    for args in (("--help",), ("queue", "--json"), ("history", "--json")):
        modules = loaded(*args)
        assert not any(f"'{name}'" in modules for name in HEAVY), (args, modules)
    assert "'zmm.serve'" in loaded("serve", "token", "list")
