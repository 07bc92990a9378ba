"""Templates: whole-value binding (no injection), --set, custom graph checks."""

from __future__ import annotations

import json

import pytest

from zmm import workflows
from zmm.errors import InvalidInput, NotFound, WorkflowRejected

VALUES = {"prompt": 'a "quoted" $seed {x}', "negative": "", "seed": 7, "steps": 3, "cfg": 7.5,
          "sampler": "euler", "scheduler": "normal", "width": 64, "height": 64,
          "checkpoint": "a.safetensors", "batch_size": 1, "filename_prefix": "zmm/job"}


def template():
    return workflows.load("sdxl-txt2img", None).graph


def test_binding_replaces_whole_values_with_types_and_never_formats():
    bound = workflows.bind(template(), VALUES)
    assert bound["3"]["inputs"]["seed"] == 7 and bound["3"]["inputs"]["cfg"] == 7.5
    assert bound["6"]["inputs"]["text"] == 'a "quoted" $seed {x}'  # a prompt stays a string
    assert bound["4"]["inputs"]["ckpt_name"] == "a.safetensors"
    assert workflows.placeholders(bound) == set()
    assert "$seed" in json.dumps(template())  # the template itself is untouched


def test_unknown_and_unbound_placeholders_are_errors():
    graph = template()
    graph["3"]["inputs"]["denoise"] = "$strength"
    with pytest.raises(InvalidInput, match=r"unknown placeholder \$strength"):
        workflows.bind(graph, VALUES)
    with pytest.raises(InvalidInput, match=r"no value for placeholder \$seed"):
        workflows.bind(template(), dict(VALUES, seed=None))


def test_user_folder_overrides_shipped_templates(tmp_path):
    custom = template()
    custom["3"]["inputs"]["denoise"] = 0.5
    (tmp_path / "sdxl-txt2img.json").write_text(json.dumps(custom))
    assert workflows.load("sdxl-txt2img", tmp_path).graph["3"]["inputs"]["denoise"] == 0.5
    with pytest.raises(NotFound) as caught:
        workflows.load("nope", tmp_path)
    assert "sdxl-txt2img" in caught.value.hint


def test_apply_sets_by_id_class_and_title():
    graph = workflows.apply_sets(template(), ["3.denoise=0.6", "KSampler.steps=9",
                                              "Save Image.filename_prefix=out/x"])
    assert graph["3"]["inputs"]["denoise"] == 0.6 and graph["3"]["inputs"]["steps"] == 9
    assert graph["9"]["inputs"]["filename_prefix"] == "out/x"


@pytest.mark.parametrize("item,message", [
    ("nodots=1", "is not NODE.INPUT=VALUE"),
    ("3.denoise", "is not NODE.INPUT=VALUE"),
    ("99.seed=1", "no node '99'"),
    ("3.nothing=1", "has no input 'nothing'"),
    ("3.model=1", "is a link"),
    ("CLIPTextEncode.text=x", "matches nodes 6, 7"),
])
def test_apply_sets_refuses(item, message):
    with pytest.raises(InvalidInput, match=message):
        workflows.apply_sets(template(), [item])


def test_validate_api_graph_refuses_ui_exports_and_broken_graphs():
    with pytest.raises(InvalidInput, match="Save \\(API\\)"):
        workflows.validate_api_graph({"nodes": [], "links": []})
    with pytest.raises(InvalidInput, match="links to missing node 42"):
        workflows.validate_api_graph({"1": {"class_type": "SaveImage", "inputs": {"images": ["42", 0]}}})
    with pytest.raises(InvalidInput, match="no output node"):
        workflows.validate_api_graph({"1": {"class_type": "EmptyImage", "inputs": {}}})


def test_check_against_server_names_the_missing_piece_and_lists_what_is_there():
    graph = workflows.bind(template(), VALUES)
    info = {name: {} for name in ("KSampler", "CheckpointLoaderSimple", "EmptyLatentImage",
                                  "CLIPTextEncode", "VAEDecode", "SaveImage")}
    workflows.check_against_server(graph, info, ["a.safetensors"])
    with pytest.raises(WorkflowRejected, match="checkpoint 'a.safetensors' is not on the ComfyUI "
                       "server; it has: b.safetensors, c.safetensors"):
        workflows.check_against_server(graph, info, ["b.safetensors", "c.safetensors"])
    del info["VAEDecode"]
    with pytest.raises(WorkflowRejected, match="node type 'VAEDecode'"):
        workflows.check_against_server(graph, info, ["a.safetensors"])
