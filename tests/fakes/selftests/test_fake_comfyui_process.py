"""The fake ComfyUI as benchmarks run it, a process of its own
(`python -m tests.fakes.comfyui`): the checkpoints given on its command line are
the ones it lists and accepts, and a prompt for another one is refused with a
400 that GET /fake/refused records."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT
from zmm import intake, workflows


@pytest.fixture
def fake_process(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.comfyui", "--output-dir", str(tmp_path / "out"),
         "--checkpoints", "a.safetensors,b.safetensors"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()


def graph_for(model: str, settings) -> dict:
    (spec,) = intake.build({"prompt": "x", "size": "64x64", "steps": "1", "model": model,
                            "family": "sd15"}, settings)
    (graph,) = workflows.printed_graphs([spec], None)
    return graph


@pytest.mark.slow
def test_a_fake_process_serves_its_command_line_checkpoints_and_records_refusals(
        fake_process, settings):
    url = fake_process
    assert httpx.get(f"{url}/models/checkpoints").json() == ["a.safetensors", "b.safetensors"]
    accepted = httpx.post(f"{url}/prompt", json={"prompt": graph_for("a.safetensors", settings),
                                                 "prompt_id": "p-a"})
    refused = httpx.post(f"{url}/prompt", json={"prompt": graph_for("c.safetensors", settings),
                                                "prompt_id": "p-c"})
    assert (accepted.status_code, refused.status_code) == (200, 400)
    (record,) = httpx.get(f"{url}/fake/refused").json()
    assert record["prompt_id"] == "p-c"
    errors = [error for node in record["node_errors"].values() for error in node["errors"]]
    assert [error["type"] for error in errors] == ["value_not_in_list"]
