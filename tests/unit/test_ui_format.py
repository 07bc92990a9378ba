"""UI-format workflows into API graphs: each self-written fixture in
ui_workflows/ exercises one thing ComfyUI's page does on Export (API); its
.api.json is that export, written out from the page's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zmm import workflows
from zmm.errors import InvalidInput, NotFound
from zmm.workflows import ui_format, ui_widgets

HERE = Path(__file__).parent / "ui_workflows"
NODE_DEFS = json.loads((HERE / "node_defs.json").read_text())
CASES = sorted(path.name.removesuffix(".ui.json") for path in HERE.glob("*.ui.json"))


def ui(name: str) -> dict:
    return json.loads((HERE / f"{name}.ui.json").read_text())


@pytest.mark.parametrize("name", CASES)
def test_fixture_converts_as_the_page_exports_it(name):
    expected = json.loads((HERE / f"{name}.api.json").read_text())
    assert ui_format.to_api(ui(name), NODE_DEFS) == expected


def test_every_feature_has_a_fixture():
    assert set(CASES) >= {"primitive", "reroute", "note", "bypass", "mute", "converted_widget",
                          "seed_control", "nested_subgraph", "image_upload"}


def test_unknown_node_class_is_named_with_exit_3():
    graph = ui("note")
    graph["nodes"][2]["type"] = "FancySampler"
    with pytest.raises(NotFound, match="'FancySampler'") as caught:
        ui_format.to_api(graph, NODE_DEFS)
    assert caught.value.exit_code == 3


def test_an_unknown_class_that_is_muted_or_bypassed_is_not_needed():
    graph = ui("note")
    graph["nodes"].append({"id": 9, "type": "FancySampler", "mode": 2, "inputs": [],
                           "outputs": []})
    assert "9" not in ui_format.to_api(graph, NODE_DEFS)


def test_not_a_ui_workflow_is_usage():
    assert not ui_format.is_ui_format({"3": {"class_type": "KSampler", "inputs": {}}})
    with pytest.raises(InvalidInput) as caught:
        ui_format.to_api({"3": {"class_type": "KSampler", "inputs": {}}}, NODE_DEFS)
    assert caught.value.exit_code == 2


def test_dynamic_prompt_choices_and_comments():
    assert ui_widgets.dynamic_prompt("a {red|blue} cube // note", lambda o: o[-1]) == "a blue cube "
    assert ui_widgets.dynamic_prompt("{a|{b|c}}", lambda o: o[-1]) == "c"
    assert ui_widgets.dynamic_prompt(r"a \{literal\} /* x */b", lambda o: o[0]) == "a {literal} b"


def test_prompt_choices_are_resolved_once_per_conversion():
    graph = ui("bypass")
    graph["nodes"][3]["widgets_values"] = ["a {red|green} boat"]
    api = ui_format.to_api(graph, NODE_DEFS, choose=lambda options: options[1])
    assert api["4"]["inputs"]["text"] == "a green boat"


def test_filename_prefix_takes_a_widget_value_by_node_title():
    graph = ui("note")
    graph["nodes"].append({"id": 4, "type": "SaveImage", "mode": 0,
                           "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
                           "outputs": [], "widgets_values": ["out/%Size.width%_x"]})
    assert ui_format.to_api(graph, NODE_DEFS)["4"]["inputs"] == {"filename_prefix": "out/768_x"}


def test_load_converts_a_ui_file_with_the_given_definitions(tmp_path):
    graph = ui("reroute")
    graph["nodes"].append({"id": 4, "type": "SaveImage", "mode": 0,
                           "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
                           "outputs": [], "widgets_values": ["zmm"]})
    graph["nodes"][2]["outputs"][0]["links"] = [3]
    graph["links"].append([3, 3, 0, 4, 0, "IMAGE"])
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(graph))
    template = workflows.load(str(path), None, node_defs=lambda: NODE_DEFS)
    assert template.graph["4"] == {"class_type": "SaveImage", "_meta": {"title": "Save Image"},
                                   "inputs": {"filename_prefix": "zmm", "images": ["3", 0]}}
