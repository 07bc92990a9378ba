"""`zmm workflow`: workflow files. `convert` prints the API graph of a UI-format
file (what ComfyUI's Workflow > Export (API) makes of it); `inputs` lists its
named inputs (what `--param` and zmm's options set); `check` tests it against
each backend's node definitions and model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from zmm.cli.common import emit, emit_json

app = typer.Typer(help="Workflow files: convert, list named inputs, check against the backends "
                  "(docs/workflows.md).",
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


@app.command("inputs")
def inputs_command(
    file: Path = typer.Argument(..., help="A workflow saved by ComfyUI (UI or API format)."),
    object_info: Optional[Path] = typer.Option(
        None, "--object-info", help="Node definitions from a saved /object_info answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the inputs as JSON."),
) -> None:
    """List the workflow's named inputs: what --param NAME=VALUE and zmm's own
    options (the prompt, --seed, --size, ...) set, with allowed values."""
    from zmm.cli.common import emit
    from zmm.workflows import inputs

    graph, ui, defs = _load(file, object_info)
    found = inputs.find(graph, ui=ui, node_defs=defs)
    if as_json:
        emit_json({"source": str(file), "inputs": [item.public() for item in found.values()]})
        return
    for item in found.values():
        slot = item.slots[0]
        also = f" (+{len(item.slots) - 1} more)" if len(item.slots) > 1 else ""
        emit(f"{item.name}\t{item.source}\tnode {slot.node} {item.class_type}.{slot.input}{also}"
             f"\t{item.type}\tdefault {item.value!r}\t{item.allowed()}")


@app.command("check")
def check_command(
    file: Path = typer.Argument(..., help="A workflow saved by ComfyUI (UI or API format)."),
) -> None:
    """Check the workflow against each backend's node classes, value ranges and
    model files (as the spool records them, else the configured ComfyUI's): one
    line per problem on stdout; exit 6 when there is any."""
    from zmm.cli.common import emit, load_config, open_store
    from zmm.errors import WorkflowRejected
    from zmm.workflows import check

    settings = load_config()
    with open_store(settings) as store:
        per_backend = store.backend_nodes(defs=True)
        files = {row["name"]: row["files"] for row in store.backends()}
    servers = {name: (defs, files.get(name)) for name, defs in per_backend.items()}
    if not servers:
        servers = {"comfyui": _server(settings)}
    merged: dict[str, Any] = {}
    for defs, _ in servers.values():
        merged.update(defs)
    graph, _, _ = _load(file, None, lambda: merged)
    lines = [f"{name}: {line}" for name, (defs, have) in servers.items()
             for line in check.problems(graph, defs, have)]
    for line in lines:
        emit(line)
    able = [name for name, (defs, have) in servers.items()
            if not check.problems(graph, defs, have)]
    if not able:
        raise WorkflowRejected(f"{len(lines)} problem(s); no backend can run {file} as it is")
    emit(f"ok on: {', '.join(able)}")


def _server(settings: Any) -> tuple[dict[str, Any], list[str]]:
    from zmm import workflows
    from zmm.backends.model_lists import folder_files

    url = settings.get("comfyui.url")
    defs = dict(workflows.server_node_defs())
    files = [f"{folder}/{name}" for folder in sorted(set(workflows.FILE_INPUTS.values()))
             for name in folder_files(url, folder) or []]
    return defs, files


def _load(file: Path, object_info: Path | None, recorded: Any = None
          ) -> tuple[dict[str, Any], Any, Any]:
    """(API graph, UI file or None, node definitions or None) of a workflow file."""
    from zmm import workflows
    from zmm.cli.common import load_config
    from zmm.errors import BackendUnavailable, NotFound

    if not file.is_file():
        raise NotFound(f"workflow file {file} does not exist")
    data = workflows.read_json(file)
    defs = _node_defs(object_info) if object_info is not None else None
    if defs is None and recorded is not None:
        defs = recorded() or None
    if defs is None:
        from zmm.cli.common import recorded_node_defs

        defs = recorded_node_defs(load_config())()
    if defs is None:
        try:
            defs = dict(workflows.server_node_defs())
        except BackendUnavailable:
            from zmm.workflows import ui_format

            if ui_format.is_ui_format(data):
                raise
    graph, ui = workflows.from_data(data, str(file), (lambda: defs) if defs else None)
    return graph, ui, defs
