"""ComfyUI API-format workflow templates: finding them (the user's folder
overrides the shipped one by name), binding placeholders, custom workflows
with `--set NODE.INPUT=VALUE`, and checking a graph against a server.

Binding walks the parsed JSON: a string that *equals* "$seed" is replaced by
the typed value. The JSON text is never formatted, so a prompt cannot inject.
Pure stdlib: `zmm generate --no-wait` imports this and must stay light.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmm.errors import InvalidInput, NotFound, WorkflowRejected

PLACEHOLDERS = frozenset({"prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler",
                          "width", "height", "checkpoint", "batch_size", "filename_prefix"})
_PLACEHOLDER = re.compile(r"^\$([a-z_]+)$")
OUTPUT_NODES = frozenset({"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG"})
CHECKPOINT_INPUTS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name",
                     "ImageOnlyCheckpointLoader": "ckpt_name"}


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    graph: dict[str, Any]


def shipped_dir() -> Path:
    from zmm.store.db import data_dir

    return data_dir("workflows")


def available(user_dir: Path | None) -> list[str]:
    names = {path.stem for path in shipped_dir().glob("*.json")}
    if user_dir is not None and user_dir.is_dir():
        names |= {path.stem for path in user_dir.glob("*.json")}
    return sorted(names)


def load(name_or_path: str, user_dir: Path | None) -> Template:
    """A template by name (user folder first) or a path to an API-format JSON file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix.lower() == ".json" or candidate.is_file():
        if not candidate.is_file():
            raise NotFound(f"workflow file {candidate} does not exist")
        return Template(candidate.stem, candidate, _read(candidate))
    for folder in (user_dir, shipped_dir()):
        if folder is not None and (folder / f"{name_or_path}.json").is_file():
            path = folder / f"{name_or_path}.json"
            return Template(name_or_path, path, _read(path))
    raise NotFound(f"no workflow named {name_or_path!r}",
                   hint="available: " + ", ".join(available(user_dir)))


def _read(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("workflow", f"{path} cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput("workflow", f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    validate_api_graph(graph, source=str(path))
    return graph


def validate_api_graph(graph: Any, *, source: str = "workflow") -> None:
    """An API-format graph: node id -> {class_type, inputs}, links [id, index]."""
    if isinstance(graph, dict) and ("nodes" in graph and "links" in graph):
        raise InvalidInput("workflow", f"{source} is a UI export; in ComfyUI use "
                           "'Save (API)' (enable dev mode options) and pass that file")
    if not isinstance(graph, dict) or not graph:
        raise InvalidInput("workflow", f"{source} must be a JSON object of nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            raise InvalidInput("workflow", f"node {node_id} in {source} needs a class_type "
                               "and an inputs object")
        for name, value in node.get("inputs", {}).items():
            if _is_link(value) and str(value[0]) not in graph:
                raise InvalidInput("workflow", f"node {node_id} input {name} links to missing "
                                   f"node {value[0]}")
    if not output_nodes(graph):
        raise InvalidInput("workflow", f"{source} has no output node ("
                           + ", ".join(sorted(OUTPUT_NODES)) + ")")


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def output_nodes(graph: dict[str, Any]) -> list[str]:
    return [node_id for node_id, node in graph.items() if node.get("class_type") in OUTPUT_NODES]


def placeholders(graph: Any) -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            match = _PLACEHOLDER.match(value)
            if match:
                found.add(match.group(1))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(graph)
    return found


def bind(graph: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `graph` with every whole-value placeholder replaced."""
    wanted = placeholders(graph)
    unknown = wanted - PLACEHOLDERS
    if unknown:
        raise InvalidInput("workflow", f"unknown placeholder ${sorted(unknown)[0]}; known: "
                           + ", ".join(f"${name}" for name in sorted(PLACEHOLDERS)))
    missing = sorted(name for name in wanted if values.get(name) is None)
    if missing:
        raise InvalidInput("workflow", f"no value for placeholder ${missing[0]}")

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            match = _PLACEHOLDER.match(value)
            return values[match.group(1)] if match else value
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(copy.deepcopy(graph))


def apply_sets(graph: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply `NODE.INPUT=VALUE` items (NODE: id, unique class_type or _meta.title)."""
    result = copy.deepcopy(graph)
    for item in sets:
        target, sep, raw = item.partition("=")
        node_ref, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_ref or not input_name:
            raise InvalidInput("set", f"{item!r} is not NODE.INPUT=VALUE")
        node_id = _find_node(result, node_ref, item)
        inputs = result[node_id].setdefault("inputs", {})
        if input_name not in inputs:
            raise InvalidInput("set", f"{item!r}: node {node_id} ({result[node_id]['class_type']}) "
                               f"has no input {input_name!r}; it has: " + ", ".join(inputs))
        if _is_link(inputs[input_name]):
            raise InvalidInput("set", f"{item!r}: input {input_name!r} is a link, not a value")
        try:
            inputs[input_name] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[input_name] = raw
    return result


def _find_node(graph: dict[str, Any], ref: str, item: str) -> str:
    if ref in graph:
        return ref
    by_class = [nid for nid, node in graph.items() if node.get("class_type") == ref]
    by_title = [nid for nid, node in graph.items() if node.get("_meta", {}).get("title") == ref]
    for matches in (by_title, by_class):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidInput("set", f"{item!r}: {ref!r} matches nodes {', '.join(matches)}; "
                               "use a node id")
    raise InvalidInput("set", f"{item!r}: no node {ref!r} (ids: {', '.join(graph)})")


def graph_model(graph: dict[str, Any]) -> str | None:
    """The checkpoint the graph loads, if any."""
    for node in graph.values():
        key = CHECKPOINT_INPUTS.get(node.get("class_type", ""))
        value = node.get("inputs", {}).get(key) if key else None
        if isinstance(value, str):
            return value
    return None


def requirements(graph: dict[str, Any]) -> tuple[set[str], set[str]]:
    node_types = {node["class_type"] for node in graph.values()}
    checkpoints = set()
    for node in graph.values():
        key = CHECKPOINT_INPUTS.get(node["class_type"])
        if key and isinstance(node.get("inputs", {}).get(key), str):
            checkpoints.add(node["inputs"][key])
    return node_types, checkpoints


def check_against_server(graph: dict[str, Any], object_info: dict[str, Any],
                         checkpoints: list[str]) -> None:
    """Refuse a graph whose node types or checkpoints the server lacks, naming
    the missing one and listing what the server has."""
    node_types, wanted = requirements(graph)
    missing_nodes = sorted(node_types - set(object_info))
    if missing_nodes:
        raise WorkflowRejected(
            f"node type {missing_nodes[0]!r} is not on the ComfyUI server"
            + (f" (nor {', '.join(missing_nodes[1:])})" if len(missing_nodes) > 1 else ""),
            hint="install the custom node that provides it, or use another workflow")
    for checkpoint in sorted(wanted):
        if checkpoint not in checkpoints:
            has = ", ".join(checkpoints) if checkpoints else "no checkpoints at all"
            raise WorkflowRejected(
                f"checkpoint {checkpoint!r} is not on the ComfyUI server; it has: {has}",
                hint="put the file in ComfyUI/models/checkpoints/ or set [models] in config.toml")
