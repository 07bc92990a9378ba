"""Templates: whole-value binding (no injection), --set, custom graph checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import zmm
from zmm import workflows
from zmm.errors import InvalidInput, NotFound, WorkflowRejected
from zmm.workflows.sets import apply_sets

VALUES = {"prompt": 'a "quoted" $seed {x}', "negative": "", "seed": 7, "steps": 3, "cfg": 7.5,
          "sampler": "euler", "scheduler": "normal", "width": 64, "height": 64,
          "checkpoint": "a.safetensors", "batch_size": 1, "filename_prefix": "zmm/job"}
SERVER_NODES = {name: {} for name in ("KSampler", "CheckpointLoaderSimple", "EmptyLatentImage",
                                      "CLIPTextEncode", "VAEDecode", "SaveImage")}


def template(name: str = "sdxl-txt2img") -> dict:
    return workflows.load(name, None).graph


# -- shipped templates ------------------------------------------------------------

@pytest.mark.parametrize("name", ["sdxl-txt2img", "sd15-txt2img"])
def test_shipped_templates_follow_the_classic_default_graph(name):
    graph = template(name)
    classes = {node_id: node["class_type"] for node_id, node in graph.items()}
    assert classes == {"3": "KSampler", "4": "CheckpointLoaderSimple", "5": "EmptyLatentImage",
                       "6": "CLIPTextEncode", "7": "CLIPTextEncode", "8": "VAEDecode",
                       "9": "SaveImage"}
    split_only = {"clip_l", "clip_g", "t5xxl", "vae", "weight_dtype", "guidance", "shift"}
    assert workflows.placeholders(graph) == workflows.PLACEHOLDERS - split_only
    assert graph["9"]["inputs"]["filename_prefix"] == "$filename_prefix"
    assert graph["6"]["inputs"]["text"] == "$prompt" and graph["7"]["inputs"]["text"] == "$negative"
    assert workflows.output_nodes(graph) == ["9"]
    workflows.validate_api_graph(workflows.bind(graph, VALUES))


def test_shipped_dir_is_the_repo_folder_in_a_checkout():
    assert workflows.shipped_dir() == Path(zmm.__file__).parent.parent / "workflows"
    assert {"sdxl-txt2img", "sd15-txt2img"} <= set(workflows.available(None))


@pytest.mark.slow
def test_importing_workflows_pulls_in_no_network_or_database_modules():
    code = ("import sys, zmm.workflows; bad = [m for m in ('httpx', 'websockets', 'sqlite3', "
            "'pydantic', 'zmm.store') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- binding ---------------------------------------------------------------------------

def test_binding_replaces_whole_values_with_types_and_never_formats():
    bound = workflows.bind(template(), VALUES)
    assert bound["3"]["inputs"]["seed"] == 7 and bound["3"]["inputs"]["cfg"] == 7.5
    assert bound["5"]["inputs"]["width"] == 64 and bound["5"]["inputs"]["batch_size"] == 1
    assert bound["6"]["inputs"]["text"] == 'a "quoted" $seed {x}'  # a prompt stays a string
    assert bound["4"]["inputs"]["ckpt_name"] == "a.safetensors"
    assert bound["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert workflows.placeholders(bound) == set()
    assert "$seed" in json.dumps(template())  # the template itself is untouched


def test_a_hostile_prompt_cannot_add_nodes_or_inputs():
    hostile = '", "denoise": 0}, "10": {"class_type": "Evil", "inputs": {}}, "x": {"y": "'
    bound = workflows.bind(template(), dict(VALUES, prompt=hostile, negative="$seed"))
    assert set(bound) == set(template())
    assert bound["6"]["inputs"]["text"] == hostile
    assert bound["7"]["inputs"]["text"] == "$seed"  # values are not bound again
    assert bound["3"]["inputs"]["denoise"] == 1.0


def test_bind_accepts_a_template_and_copies_deeply():
    loaded = workflows.load("sd15-txt2img", None)
    values = dict(VALUES, prompt={"nested": ["list"]})
    bound = workflows.bind(loaded, values)
    bound["6"]["inputs"]["text"]["nested"].append("changed")
    assert values["prompt"] == {"nested": ["list"]}
    assert loaded.graph["6"]["inputs"]["text"] == "$prompt"


def test_unknown_and_unbound_placeholders_are_errors():
    graph = template()
    graph["3"]["inputs"]["denoise"] = "$strength"
    with pytest.raises(InvalidInput, match=r"unknown placeholder \$strength"):
        workflows.bind(graph, VALUES)
    with pytest.raises(InvalidInput, match=r"no value for placeholder \$seed"):
        workflows.bind(template(), dict(VALUES, seed=None))
    without = dict(VALUES)
    del without["filename_prefix"]
    with pytest.raises(InvalidInput, match=r"\$filename_prefix"):
        workflows.bind(template(), without)


@pytest.mark.parametrize("literal", ["$Seed", "$1", "$ seed", "$seed2", "x $seed", "$seed ", "$"])
def test_only_exact_lowercase_dollar_names_are_placeholders(literal):
    graph = {"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": literal}}}
    assert workflows.placeholders(graph) == set()
    assert workflows.bind(graph, {})["1"]["inputs"]["filename_prefix"] == literal


# -- finding templates ---------------------------------------------------------

def test_user_folder_overrides_shipped_templates(tmp_path):
    custom = template()
    custom["3"]["inputs"]["denoise"] = 0.5
    (tmp_path / "sdxl-txt2img.json").write_text(json.dumps(custom))
    (tmp_path / "mine.json").write_text(json.dumps(custom))
    loaded = workflows.load("sdxl-txt2img", tmp_path)
    assert loaded.graph["3"]["inputs"]["denoise"] == 0.5 and loaded.path.parent == tmp_path
    assert workflows.load("sd15-txt2img", tmp_path).path.parent == workflows.shipped_dir()
    assert "mine" in workflows.available(tmp_path)
    with pytest.raises(NotFound) as caught:
        workflows.load("nope", tmp_path)
    assert "sdxl-txt2img" in caught.value.hint and "mine" in caught.value.hint


def test_load_by_path(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(template()))
    assert workflows.load(str(path), None).name == "export"
    with pytest.raises(NotFound, match="workflow: no such file") as caught:
        workflows.load(str(tmp_path / "missing.json"), None)
    assert "sdxl-txt2img" in caught.value.hint
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="is not JSON"):
        workflows.load(str(tmp_path / "broken.json"), None)
    # A UI-format file is converted with the node definitions; an empty one has no nodes.
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(InvalidInput, match="JSON object of nodes"):
        workflows.load(str(tmp_path / "ui.json"), None, node_defs=dict)


# -- custom graphs ---------------------------------------------------------------

def save(**inputs):
    return {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", **inputs}}


@pytest.mark.parametrize("graph,message", [
    ({"nodes": [], "links": []}, "UI export"),
    ([], "JSON object of nodes"),
    ({}, "JSON object of nodes"),
    ({"1": {"inputs": {}}}, "node 1 .* needs a class_type"),
    ({"1": {"class_type": "SaveImage"}}, "node 1 .* needs a class_type and an inputs object"),
    ({"1": save(images=["42", 0])}, "links to missing node 42"),
    ({"1": save(images=[2, 0]), "2": {"class_type": "EmptyImage", "inputs": {}}}, "not a link"),
    ({"1": save(images=["2", 0, 1])}, "not a link"),
    ({"1": save(images=["2", -1])}, "not a link"),
    ({"1": {"class_type": "EmptyImage", "inputs": {}}}, "no output node"),
])
def test_validate_api_graph_refuses_ui_exports_and_broken_graphs(graph, message):
    with pytest.raises(InvalidInput, match=message):
        workflows.validate_api_graph(graph)


def test_validate_api_graph_accepts_other_output_classes_when_allowed():
    graph = {"1": {"class_type": "VHS_VideoCombine", "inputs": {}}}
    with pytest.raises(InvalidInput, match="no output node"):
        workflows.validate_api_graph(graph)
    workflows.validate_api_graph(graph, output_classes={"VHS_VideoCombine"})
    preview = {"1": {"class_type": "PreviewImage", "inputs": {}, "_meta": {"title": "P"}}}
    workflows.validate_api_graph(preview)


def test_apply_sets_by_id_class_and_title():
    original = template()
    graph = apply_sets(original, ["3.denoise=0.6", "KSampler.steps=9",
                                            "Save Image.filename_prefix=out/x",
                                            "Positive.text=a cat = a dog"])
    assert graph["3"]["inputs"]["denoise"] == 0.6 and graph["3"]["inputs"]["steps"] == 9
    assert graph["9"]["inputs"]["filename_prefix"] == "out/x"
    assert graph["6"]["inputs"]["text"] == "a cat = a dog"
    assert original["3"]["inputs"]["steps"] == "$steps"  # the input graph is not changed


@pytest.mark.parametrize("raw,value", [
    ("12", 12), ("1.5", 1.5), ("true", True), ('"12"', "12"), ("null", None),
    ("euler", "euler"), ("NaN", "NaN"), ("Infinity", "Infinity"), ("1e999", "1e999"),
    ('{"a": 1}', {"a": 1}), ("", ""),
])
def test_apply_sets_parses_json_values_else_keeps_text(raw, value):
    graph = apply_sets(template(), [f"3.scheduler={raw}"])
    assert graph["3"]["inputs"]["scheduler"] == value


@pytest.mark.parametrize("item,message", [
    ("nodots=1", "is not NODE.INPUT=VALUE"),
    ("3.denoise", "is not NODE.INPUT=VALUE"),
    (".denoise=1", "is not NODE.INPUT=VALUE"),
    ("99.seed=1", "no node '99'"),
    ("3.nothing=1", "has no input 'nothing'"),
    ("3.model=1", "is a link"),
    ("CLIPTextEncode.text=x", "matches nodes 6, 7"),
    ('3.seed=["4", 0]', "read by ComfyUI as a link"),
])
def test_apply_sets_refuses(item, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        apply_sets(template(), [item])
    assert caught.value.field == "set" and repr(item) in str(caught.value)


# -- what a graph needs ------------------------------------------------------------

def test_requirements_and_model_ignore_unbound_placeholders():
    assert workflows.graph_model(template()) is None
    node_types, checkpoints = workflows.requirements(template())
    assert node_types == set(SERVER_NODES) and checkpoints == set()
    bound = workflows.bind(template(), VALUES)
    assert workflows.graph_model(bound) == "a.safetensors"
    assert workflows.requirements(bound)[1] == {"a.safetensors"}
    bound["10"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.ckpt"}}
    bound["11"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["12", 0]}}
    assert workflows.requirements(bound)[1] == {"a.safetensors", "b.ckpt"}


def test_check_against_server_names_the_missing_piece_and_lists_what_is_there():
    graph = workflows.bind(template(), VALUES)
    info = dict(SERVER_NODES)
    workflows.check_against_server(graph, info, ["a.safetensors"])
    with pytest.raises(WorkflowRejected, match="checkpoint 'a.safetensors' is not on the ComfyUI "
                       "server; it has: b.safetensors, c.safetensors$") as caught:
        workflows.check_against_server(graph, info, ["c.safetensors", "b.safetensors"])
    assert "ComfyUI/models/checkpoints/" in caught.value.hint
    with pytest.raises(WorkflowRejected, match="it has: none at all"):
        workflows.check_against_server(graph, info, [])
    del info["VAEDecode"]
    with pytest.raises(WorkflowRejected, match="node type 'VAEDecode' is not on the ComfyUI "
                       "server") as caught:
        workflows.check_against_server(graph, info, ["a.safetensors"])
    assert "custom_nodes" in caught.value.hint


def test_check_against_server_keeps_one_short_line_and_suggests_a_near_name():
    graph = workflows.bind(template(), dict(VALUES, checkpoint="sd_xl_base_1.0.safetensors"))
    many = [f"model-{i:03}.safetensors" for i in range(40)] + ["sd_xl_base_1.0_0.9vae.safetensors"]
    with pytest.raises(WorkflowRejected) as caught:
        workflows.check_against_server(graph, dict(SERVER_NODES), many)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("and 29 more")
    assert "did you mean 'sd_xl_base_1.0_0.9vae.safetensors'?" in caught.value.hint
