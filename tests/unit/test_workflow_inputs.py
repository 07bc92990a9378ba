"""Named inputs of a workflow (zmm.workflows.inputs) and how a request's
options and --param land on a workflow without placeholders (zmm.intake)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zmm import intake, workflows
from zmm.errors import InvalidInput
from zmm.workflows import check, inputs

HERE = Path(__file__).parent / "api_workflows"
DEFS = json.loads((Path(__file__).parent / "ui_workflows" / "node_defs.json").read_text())


def graph(name: str) -> dict:
    return json.loads((HERE / f"{name}.api.json").read_text())


def where(found: dict, name: str) -> list[tuple[str, str]]:
    item = found[name]
    slots = item.slots if isinstance(item, inputs.Input) else item
    return [(slot.node, slot.input) for slot in slots]


def test_a_ksampler_export_names_the_standard_inputs():
    found = inputs.standard(graph("txt2img"))
    assert where(found, "prompt") == [("6", "text")]
    assert where(found, "negative") == [("7", "text")]
    assert where(found, "seed") == [("3", "seed")]
    assert where(found, "width") == [("5", "width")] and where(found, "height") == [("5", "height")]
    assert where(found, "model") == [("4", "ckpt_name")]
    assert list(found) == ["prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler",
                           "denoise", "width", "height", "batch_size", "model"]


def test_the_first_sampler_of_a_hires_chain_is_the_one_and_every_sampler_takes_the_seed():
    g = graph("hires")
    assert inputs.samplers(g) == ["3", "11"]  # 11 is fed by 3, whatever the ids say
    found = inputs.standard(g)
    assert where(found, "steps") == [("3", "steps")] and where(found, "denoise") == [("3", "denoise")]
    assert where(found, "seed") == [("3", "seed"), ("11", "seed")]
    assert where(found, "width") == [("5", "width")]


def test_a_custom_sampler_with_guider_noise_and_flux_guidance():
    found = inputs.standard(graph("flux_custom"))
    assert where(found, "seed") == [("25", "noise_seed")]
    assert where(found, "steps") == [("17", "steps")]
    assert where(found, "scheduler") == [("17", "scheduler")]
    assert where(found, "sampler") == [("16", "sampler_name")]
    assert where(found, "prompt") == [("6", "text")]
    assert where(found, "guidance") == [("26", "guidance")]
    assert where(found, "model") == [("12", "unet_name")]
    assert "negative" not in found and "cfg" not in found  # BasicGuider has neither


def test_titles_and_app_mode_name_inputs():
    g = graph("txt2img")
    found = inputs.find(g)
    assert where(found, "Lighting.filename_prefix") == [("9", "filename_prefix")]
    assert "Lighting" in found and "KSampler.seed" not in found
    ui = {"extra": {"linearData": {"inputs": [[5, "width"], {"nodeId": 3, "widgetName": "cfg",
                                                            "label": "guidance scale"}]}}}
    chosen = inputs.find(g, ui=ui)
    assert where(chosen, "guidance scale") == [("3", "cfg")]
    assert "Lighting" not in chosen  # App Mode's selection replaces the titles
    assert chosen["width"].source == "app"


def test_values_are_typed_and_checked_against_the_definitions():
    found = inputs.find(graph("txt2img"), node_defs=DEFS)
    steps = found["steps"]
    assert steps.type == "INT" and inputs.typed(steps, "30", "param steps") == 30
    with pytest.raises(InvalidInput) as caught:
        inputs.typed(steps, "0", "param steps")
    assert caught.value.field == "param steps" and "from 1 to" in caught.value.allowed
    sampler = found["sampler"]
    assert sampler.type == "COMBO" and inputs.typed(sampler, "euler", "param sampler") == "euler"
    with pytest.raises(InvalidInput, match="one of"):
        inputs.typed(sampler, "no-such", "param sampler")


@pytest.fixture()
def api_file(tmp_path):
    def write(name: str) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(graph(name)))
        return str(path)
    return write


def test_options_land_on_an_export_and_the_job_records_what_the_graph_holds(settings, api_file):
    specs = intake.build({"prompt": "a blue sphere", "workflow": api_file("txt2img"),
                          "seed": "123", "size": "640x384", "steps": "12", "count": "2"}, settings)
    first, second = specs
    assert first.graph["6"]["inputs"]["text"] == "a blue sphere"
    assert first.graph["3"]["inputs"]["seed"] == 123 and second.graph["3"]["inputs"]["seed"] == 124
    assert first.graph["5"]["inputs"]["width"] == 640 and first.graph["5"]["inputs"]["height"] == 384
    assert first.graph["3"]["inputs"]["steps"] == 12
    assert (first.prompt, first.seed, first.width, first.height) == ("a blue sphere", 123, 640, 384)
    assert first.graph["7"]["inputs"]["text"] == "blurry"  # no --negative: the workflow's own
    assert first.cfg == 8.0 and first.sampler == "euler"
    assert "nodes/KSampler" in first.needs and "checkpoints/v1-5-pruned-emaonly.safetensors" \
        in first.needs


def test_an_option_the_workflow_has_no_place_for_is_refused(settings, api_file):
    with pytest.raises(InvalidInput) as caught:
        intake.build({"prompt": "a fox", "workflow": api_file("flux_custom"),
                      "negative": "blurry"}, settings)
    assert caught.value.field == "negative" and "no place" in caught.value.allowed


def test_params_set_named_inputs_and_name_the_bad_ones(settings, api_file):
    (spec,) = intake.build({"prompt": "a fox", "workflow": api_file("flux_custom"),
                            "param": ["guidance=2.5"], "params": {"steps": 8}}, settings)
    assert spec.graph["26"]["inputs"]["guidance"] == 2.5
    assert spec.graph["17"]["inputs"]["steps"] == 8 and spec.steps == 8
    with pytest.raises(InvalidInput) as caught:
        intake.build({"prompt": "a fox", "workflow": api_file("flux_custom"),
                      "param": ["nope=1"]}, settings)
    assert caught.value.field == "param nope" and "guidance" in caught.value.allowed
    with pytest.raises(InvalidInput) as caught:
        intake.build({"prompt": "a fox", "workflow": api_file("flux_custom"),
                      "param": ["steps=many"]}, settings)
    assert caught.value.field == "param steps"


def test_without_a_prompt_the_workflow_keeps_its_own(settings, api_file):
    (spec,) = intake.build({"workflow": api_file("txt2img"), "seed": "5"}, settings)
    assert spec.prompt == "a red cube" and spec.graph["6"]["inputs"]["text"] == "a red cube"


def test_the_enhanced_prompt_binds_into_a_workflow_without_placeholders(settings, api_file):
    (spec,) = intake.build({"prompt": "a cube", "workflow": api_file("txt2img")}, settings)
    params = json.loads(json.dumps(spec.stored_params()))
    bound = workflows.bind_job(params, spec.workflow, "mmg-1", None, enhanced_prompt="a shiny cube")
    assert bound["6"]["inputs"]["text"] == "a shiny cube"


def test_shipped_placeholder_templates_bind_as_before(settings):
    (spec,) = intake.build({"prompt": "a lighthouse", "workflow": "sd15-txt2img", "seed": "9"},
                           settings)
    bound = workflows.bind_job(json.loads(json.dumps(spec.stored_params())), spec.workflow,
                               "mmg-1", None)
    texts = [node["inputs"].get("text") for node in bound.values()]
    assert "a lighthouse" in texts and spec.prompt == "a lighthouse"


def test_check_lists_each_problem():
    g = graph("txt2img")
    g["3"]["inputs"]["steps"] = 0
    g["9"]["class_type"] = "NoSuchSave"
    lines = check.problems(g, DEFS, ["checkpoints/other.safetensors"])
    assert any("node 9 (NoSuchSave)" in line and "not installed" in line for line in lines)
    assert any("node 3 (KSampler) steps: 0 is not an integer from 1" in line for line in lines)
    assert any("v1-5-pruned-emaonly.safetensors" in line and "models/checkpoints/" in line
               for line in lines)
