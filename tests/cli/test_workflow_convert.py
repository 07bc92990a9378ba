"""`zmm workflow convert` and UI-format files given to `zmm generate --workflow`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import closed_url

FIXTURES = Path(__file__).parent.parent / "unit" / "ui_workflows"
DEFS = str(FIXTURES / "node_defs.json")


def saved_workflow(tmp_path: Path, checkpoint: str) -> Path:
    """The reroute fixture with a save node behind the decoder: a graph that runs."""
    graph = json.loads((FIXTURES / "reroute.ui.json").read_text())
    graph["nodes"][0]["widgets_values"] = [checkpoint]
    graph["nodes"][2]["outputs"][0]["links"] = [3]
    graph["nodes"].append({"id": 4, "type": "SaveImage", "mode": 0,
                           "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
                           "outputs": [], "widgets_values": ["mine"]})
    graph["links"].append([3, 3, 0, 4, 0, "IMAGE"])
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(graph))
    return path


def test_convert_prints_the_api_graph(cli):
    result = cli("workflow", "convert", str(FIXTURES / "bypass.ui.json"), "--object-info", DEFS)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((FIXTURES / "bypass.api.json").read_text())


def test_convert_json_says_where_the_graph_came_from(cli):
    result = cli("workflow", "convert", str(FIXTURES / "note.ui.json"), "--object-info", DEFS,
                 "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["format"], data["nodes"], list(data["graph"])) == ("ui", 1, ["3"])


def test_convert_unknown_class_is_exit_3_naming_it(cli, tmp_path):
    graph = json.loads((FIXTURES / "note.ui.json").read_text())
    graph["nodes"][2]["type"] = "FancyLatent"
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(graph))
    result = cli("workflow", "convert", str(path), "--object-info", DEFS)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: node class 'FancyLatent'")
    assert result.stdout == ""


def test_convert_refuses_what_is_not_a_workflow(cli, tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    result = cli("workflow", "convert", str(path), "--object-info", DEFS)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("error: workflow: ")
    broken = tmp_path / "defs.json"
    broken.write_text("{nope")
    result = cli("workflow", "convert", str(FIXTURES / "note.ui.json"), "--object-info",
                 str(broken))
    assert result.exit_code == 2 and "object-info" in result.stderr


def test_convert_without_a_server_is_exit_4(cli, monkeypatch):
    monkeypatch.setenv("ZMM_COMFYUI_URL", closed_url())
    result = cli("workflow", "convert", str(FIXTURES / "note.ui.json"))
    assert result.exit_code == 4
    assert result.stderr.startswith("error: ")


def test_generate_takes_a_ui_file_converted_with_the_servers_definitions(cli, comfy, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("ZMM_COMFYUI_URL", comfy.url)
    path = saved_workflow(tmp_path, comfy.checkpoints[0])
    # The file has no sampler, so no place for a prompt: none is given.
    result = cli("generate", "--workflow", str(path), "--print-workflow")
    assert result.exit_code == 0, result.stderr
    graph = json.loads(result.stdout)
    assert graph["4"]["inputs"]["images"] == ["3", 0]
    assert graph["3"]["inputs"] == {"vae": ["1", 2]}
    assert graph["1"]["inputs"] == {"ckpt_name": comfy.checkpoints[0]}
