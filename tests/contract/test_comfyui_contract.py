"""One contract, two servers: these assertions hold for the fake ComfyUI and
for a real one (set ZMM_REAL_COMFYUI_URL, e.g. a CPU-only ComfyUI 0.3.64 on
127.0.0.1:8188). The expectations were recorded from the real server; a fake
that drifts from it fails here first."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.contract.scenarios import MODEL_FREE, post_prompt, run_job, submit_and_cancel
from tests.fakes.comfyui import FakeComfyUI
from zmm import config, families, intake, workflows

REAL = os.environ.get("ZMM_REAL_COMFYUI_URL")


@pytest.fixture(scope="module", params=["fake", "real"])
def server(request, tmp_path_factory):
    if request.param == "real":
        if not REAL:
            pytest.skip("set ZMM_REAL_COMFYUI_URL to check a real ComfyUI")
        yield REAL.rstrip("/")
        return
    fake = FakeComfyUI(output_dir=tmp_path_factory.mktemp("contract")).start()
    yield fake.url
    fake.stop()


def fresh_graph() -> dict:
    """A graph no earlier run submitted: a real server's cache outlives test runs."""
    graph = copy.deepcopy(MODEL_FREE)
    graph["1"]["inputs"]["color"] = random.randrange(0xFFFFFF)
    return graph


def test_event_order_of_a_model_free_job(server):
    events, history, prompt_id = run_job(server, fresh_graph())
    assert events == ["status", "execution_start", "execution_cached", "executing", "executing",
                      "executing", "executed", "execution_success", "executing"]
    assert history["status"]["status_str"] == "success" and history["status"]["completed"]
    assert [m[0] for m in history["status"]["messages"]] == [
        "execution_start", "execution_cached", "execution_success"]
    (image,) = history["outputs"]["3"]["images"]
    assert image["subfolder"] == "contract" and image["type"] == "output"
    assert history["prompt"][1] == prompt_id


def test_identical_resubmission_is_served_from_cache(server):
    graph = fresh_graph()
    _, first, _ = run_job(server, graph)
    events, again, _ = run_job(server, graph)
    assert events == ["status", "execution_start", "execution_cached", "executed",
                      "execution_success", "executing"]
    assert again["outputs"] == first["outputs"]  # the old file, no new one


BASE = {"prompt": MODEL_FREE}
CASES = {
    "no_prompt": ({"x": 1}, "no_prompt", None),
    "unknown_class": ({"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}, "invalid_prompt", None),
    "no_outputs": ({"prompt": {"1": MODEL_FREE["1"]}}, "prompt_no_outputs", None),
    "bad_int": ({"prompt": {**MODEL_FREE, "1": {"class_type": "EmptyImage", "inputs": {
        "width": "abc", "height": 64, "batch_size": 1, "color": 0}}}},
        "prompt_outputs_failed_validation", ("1", "invalid_input_type")),
    "missing_input": ({"prompt": {**MODEL_FREE, "2": {"class_type": "ImageInvert", "inputs": {}}}},
                      "prompt_outputs_failed_validation", ("2", "required_input_missing")),
    "below_min": ({"prompt": {**MODEL_FREE, "1": {"class_type": "EmptyImage", "inputs": {
        "width": 0, "height": 64, "batch_size": 1, "color": 0}}}},
        "prompt_outputs_failed_validation", ("1", "value_smaller_than_min")),
    "type_mismatch": ({"prompt": {**MODEL_FREE, "2": {"class_type": "ImageInvert", "inputs": {
        "image": ["9", 0]}}, "9": {"class_type": "EmptyLatentImage", "inputs": {
            "width": 64, "height": 64, "batch_size": 1}}}},
        "prompt_outputs_failed_validation", ("2", "return_type_mismatch")),
    "missing_link": ({"prompt": {**MODEL_FREE, "2": {"class_type": "ImageInvert", "inputs": {
        "image": ["77", 0]}}}}, "prompt_outputs_failed_validation",
        ("2", "exception_during_inner_validation")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validation_errors_have_the_recorded_shapes(server, case):
    body, error_type, node_error = CASES[case]
    status, answer = post_prompt(server, body)
    assert status == 400 and answer["error"]["type"] == error_type
    assert set(answer["error"]) == {"type", "message", "details", "extra_info"}
    if node_error:
        node_id, kind = node_error
        info = answer["node_errors"][node_id]
        assert set(info) == {"errors", "dependent_outputs", "class_type"}
        assert info["errors"][0]["type"] == kind and info["dependent_outputs"] == ["3"]
    else:
        assert answer["node_errors"] == {}


def test_malformed_bodies_are_plain_text_500s(server):
    for raw in (b"{not json", json.dumps({"prompt": [1, 2]}).encode()):
        status, answer = post_prompt(server, raw, raw=True)
        assert status == 500 and answer.startswith("500 Internal Server Error")


@pytest.mark.slow
def test_zmm_generate_end_to_end(server, tmp_path):
    graph = fresh_graph()
    graph["3"]["inputs"]["filename_prefix"] = "$filename_prefix"
    path = tmp_path / "model-free.json"
    path.write_text(json.dumps(graph))
    env = {**os.environ, "ZMM_HOME": str(tmp_path / "home"), "ZMM_COMFYUI_URL": server,
           "ZMM_OLLAMA_ENABLED": "false"}
    result = subprocess.run([sys.executable, "-m", "zmm", "generate", "contract", "--workflow",
                             str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    saved = result.stdout.strip()
    assert saved.endswith(".png") and open(saved, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("alias", families.ALIASES)
def test_every_family_s_graph_passes_validation(server, alias, tmp_path):
    """zmm's bound graph of each family, with the [models] default file names.
    On a real server those files must exist (empty files pass validation):
    models/checkpoints/{sd_xl_base_1.0,v1-5-pruned-emaonly}.safetensors,
    models/diffusion_models/{sd3.5_medium,sd3.5_large,flux1-schnell,flux1-dev}.safetensors,
    models/text_encoders/{clip_l,clip_g,t5xxl_fp16}.safetensors,
    models/vae/{ae,sd3.5_vae}.safetensors. The prompt is taken back at once."""
    settings = config.load(tmp_path / "home")
    specs = intake.build({"prompt": "contract", "model": alias, "size": "64x64", "steps": 1},
                         settings)
    (graph,) = workflows.printed_graphs(specs, None)
    status, answer = submit_and_cancel(server, graph)
    assert (status, answer.get("node_errors")) == (200, {}), answer


def test_a_v3_combo_choice_is_not_checked_at_validation(server, tmp_path):
    """TripleCLIPLoader's file names come as "COMBO" options; the server takes a
    wrong one with 200 (it fails only when the node runs), so zmm must check
    the files itself (zmm.workflows.check_against_server)."""
    settings = config.load(tmp_path / "home")
    specs = intake.build({"prompt": "contract", "model": "sd35-medium", "size": "64x64",
                          "steps": 1}, settings)
    (graph,) = workflows.printed_graphs(specs, None)
    (loader,) = [node for node in graph.values() if node["class_type"] == "TripleCLIPLoader"]
    loader["inputs"]["clip_name1"] = "not-a-file.safetensors"
    status, answer = submit_and_cancel(server, graph)
    assert (status, answer.get("node_errors")) == (200, {}), answer
