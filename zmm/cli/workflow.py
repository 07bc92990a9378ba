"""`zmm workflow`: workflow files. `convert` prints the API graph of a UI-format
file (what ComfyUI's Workflow > Export (API) makes of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from zmm.cli.common import emit, emit_json

app = typer.Typer(help="Workflow files: convert the UI format to the API format (docs/workflows.md).",
                  no_args_is_help=True)


@app.command("convert")
def convert(
    file: Path = typer.Argument(..., help="A workflow saved by ComfyUI (UI or API format)."),
    object_info: Optional[Path] = typer.Option(
        None, "--object-info", help="Node definitions from a saved /object_info answer "
        "instead of asking the configured ComfyUI."),
    as_json: bool = typer.Option(False, "--json", help="Print the graph with where it came "
                                 "from as JSON: {source, format, nodes, graph}."),
) -> None:
    """Print the API graph of a workflow file on stdout (the UI format converted
    as ComfyUI's own page does; an API-format file as it is)."""
    from zmm import workflows
    from zmm.errors import InvalidInput, NotFound
    from zmm.workflows import ui_format

    if not file.exists():
        raise NotFound(f"workflow: no such file {file}")
    data = workflows.read_json(file)
    if ui_format.is_ui_format(data):
        graph = ui_format.to_api(data, _node_defs(object_info))
        kind = "ui"
    elif isinstance(data, dict) and data and all(
            isinstance(node, dict) and "class_type" in node for node in data.values()):
        graph, kind = data, "api"
    else:
        raise InvalidInput("workflow", f"{file} is not a ComfyUI workflow (neither the UI "
                           "format, an object with a nodes list, nor the API format)")
    if as_json:
        emit_json({"source": str(file), "format": kind, "nodes": len(graph), "graph": graph})
    else:  # the graph itself, as ComfyUI takes it: not an envelope (docs/json-output.md)
        import json

        emit(json.dumps(graph, indent=2))


def _node_defs(path: Path | None) -> Any:
    from zmm import workflows
    from zmm.errors import InvalidInput

    if path is None:
        return workflows.server_node_defs()
    import json

    from zmm.fs import MB, read_user_text

    text = read_user_text(path, "object-info", 256 * MB)
    try:
        data = json.loads(text)
    except (RecursionError, ValueError) as exc:
        raise InvalidInput("object-info", f"a readable JSON file of node definitions "
                           f"(/object_info); {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("object-info", "a JSON object of node definitions (/object_info)")
    return data
