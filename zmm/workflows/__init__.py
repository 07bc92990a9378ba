"""ComfyUI API-format workflow templates: finding them (the user's folder
overrides the shipped one by name), binding placeholders, custom workflows
with `--set NODE.INPUT=VALUE`, and checking a graph against a server. A file
in the UI format is converted to the API format as it is read (`ui_format`,
with the node definitions of the configured ComfyUI).

Binding walks the parsed JSON: a string that *equals* "$seed" is replaced by
the typed value; the JSON text is never formatted, so a prompt cannot inject.
Pure stdlib, no network: `zmm generate --no-wait` imports this and stays fast.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmm
from zmm.errors import InvalidInput, ModelFileMissing, NotFound, WorkflowRejected
from zmm.fs import MB, read_user_text
from zmm.jobs import placeholder_job_id

# $checkpoint is the model file: ckpt_name of a checkpoint, unet_name of split files.
PLACEHOLDERS = frozenset({"prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler",
                          "width", "height", "checkpoint", "batch_size", "filename_prefix",
                          "clip_l", "clip_g", "t5xxl", "vae", "weight_dtype", "guidance",
                          "shift"})
# Letters and underscores ("$seed2" stays literal text); t5xxl is the one name with a digit.
_PLACEHOLDER = re.compile(r"^\$([a-z_]+|t5xxl)$")
MAX_BYTES = 16 * MB  # a workflow file; ComfyUI's own graphs are kilobytes
OUTPUT_NODES = frozenset({"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG"})
CHECKPOINT_INPUTS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name",
                     "ImageOnlyCheckpointLoader": "ckpt_name",
                     "unCLIPCheckpointLoader": "ckpt_name"}
# (node class, input) -> the server's model folder (GET /models/<folder>) its file is in.
FILE_INPUTS: dict[tuple[str, str], str] = {
    **{(node, "ckpt_name"): "checkpoints" for node in CHECKPOINT_INPUTS},
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
}
FOLDER_WORDS = {"checkpoints": "checkpoint", "diffusion_models": "diffusion model",
                "text_encoders": "text encoder", "vae": "VAE", "loras": "LoRA",
                "upscale_models": "upscale model", "nodes": "node class"}
# VAELoader offers these without a file in models/vae/.
BUILTIN_VAES = frozenset({"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"})
NODE_NEEDS = "nodes"  # a job's needs name its custom graph's node classes as nodes/CLASS
_LISTED = 12  # names listed in an error line before "and N more"


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    graph: dict[str, Any]
    ui: dict[str, Any] | None = None  # the UI-format file the graph was converted from


def shipped_dir() -> Path:
    """`zmm/_data/workflows` in an installed wheel, the repo's `workflows/` in a checkout."""
    package = Path(zmm.__file__).parent
    wheel = package / "_data" / "workflows"
    return wheel if wheel.is_dir() else package.parent / "workflows"


def available(user_dir: Path | None) -> list[str]:
    names = {path.stem for path in shipped_dir().glob("*.json")}
    if user_dir is not None and user_dir.is_dir():
        names |= {path.stem for path in user_dir.glob("*.json")}
    return sorted(names)


NodeDefs = Callable[[], Mapping[str, Any]]


def load(name_or_path: str | Path, user_dir: Path | None,
         node_defs: NodeDefs | None = None) -> Template:
    """A template by name (user folder first, then shipped) or a path to a
    JSON file in the API or the UI format. Missing -> NotFound listing the
    available names. A UI-format file is converted with `node_defs()` (by
    default the configured ComfyUI's /object_info, asked only then)."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    hint = "available workflows: " + (", ".join(available(user_dir)) or "none")
    if candidate.suffix.lower() == ".json" or "/" in text or "\\" in text or candidate.exists():
        if not candidate.exists():
            raise NotFound(f"workflow: no such file {candidate}", hint=hint)
        return Template(candidate.stem, candidate, *_read(candidate, node_defs))
    for folder in (user_dir, shipped_dir()):
        path = folder / f"{text}.json" if folder is not None else None
        if path is not None and path.is_file():
            return Template(text, path, *_read(path, node_defs))
    raise NotFound(f"no workflow named {text!r}", hint=hint)


def read_json(path: Path) -> Any:
    """A workflow file's JSON, read within MAX_BYTES; unreadable or not JSON -> InvalidInput."""
    text = read_user_text(path, "workflow", MAX_BYTES)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("workflow",
                           f"{path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise InvalidInput("workflow", f"JSON nested a few levels deep; {path} is nested "
                           "hundreds deep") from None
    except ValueError as exc:  # an integer longer than Python converts
        raise InvalidInput("workflow", f"{path} is not usable JSON ({exc})") from None


def is_ui_format(data: Any) -> bool:
    """A UI-format workflow: an object with a `nodes` list (and usually `links`)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def _read(path: Path, node_defs: NodeDefs | None = None
          ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the API graph, the UI-format file it came from or None)."""
    return from_data(read_json(path), str(path), node_defs)


def from_data(data: Any, source: str, node_defs: NodeDefs | None = None
              ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A workflow's JSON (either format) as (the API graph, the UI file or None)."""
    ui = None
    if is_ui_format(data):
        from zmm.workflows import ui_format  # the converter, only for a UI-format file

        if not data["nodes"]:  # nothing to convert: no server needs asking
            raise InvalidInput("workflow", f"{source} is a UI-format workflow without nodes; a "
                               "workflow is a JSON object of nodes (API format) or a UI file "
                               "with some")
        ui, data = data, ui_format.to_api(data, (node_defs or server_node_defs)())
    validate_api_graph(data, source=source)
    return data, ui


def server_node_defs() -> Mapping[str, Any]:
    """The node definitions (/object_info) of the configured ComfyUI."""
    from zmm import config
    from zmm.backends.comfy import ComfyClient

    settings = config.load()
    client = ComfyClient(settings.get("comfyui.url"), timeout=settings.get("comfyui.timeout_s"))
    try:
        return client.object_info()
    finally:
        client.close()


def validate_api_graph(graph: Any, *, source: str = "workflow",
                       output_classes: Collection[str] = OUTPUT_NODES) -> None:
    """An API-format graph: node id -> {class_type, inputs}; every list input is
    a link [node id, output index] to a node in the graph (ComfyUI reads every
    list as a link); at least one node of `output_classes`."""
    if isinstance(graph, dict) and (isinstance(graph.get("nodes"), list)
                                    or isinstance(graph.get("links"), list)):
        raise InvalidInput("workflow", f"{source} is a UI export, not the API format",
                           hint="in ComfyUI use Workflow > Export (API) / 'Save (API)' "
                                "and pass that file")
    if not isinstance(graph, dict) or not graph:
        raise InvalidInput("workflow", f"{source} must be a JSON object of nodes (API format)")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not node["class_type"] or not isinstance(node.get("inputs"), dict):
            raise InvalidInput("workflow", f"node {node_id} in {source} needs a class_type "
                               "and an inputs object")
        for name, value in node["inputs"].items():
            if not isinstance(value, list):
                continue
            if not _is_link(value):
                raise InvalidInput("workflow", f"node {node_id} input {name} in {source} is a "
                                   f"list but not a link [\"node id\", output index]: {value!r}")
            if value[0] not in graph:
                raise InvalidInput("workflow", f"node {node_id} input {name} in {source} links "
                                   f"to missing node {value[0]}")
    if not output_nodes(graph, output_classes):
        raise InvalidInput("workflow", f"{source} has no output node ("
                           + ", ".join(sorted(output_classes)) + ")")


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool) and value[1] >= 0)


def output_nodes(graph: dict[str, Any],
                 output_classes: Collection[str] = OUTPUT_NODES) -> list[str]:
    """Ids of the nodes that produce files (by class)."""
    return [node_id for node_id, node in graph.items()
            if isinstance(node, dict) and node.get("class_type") in output_classes]


def placeholders(graph: Any) -> set[str]:
    """Names of every whole-value placeholder ("$seed" -> "seed") in the graph."""
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


def bind(template: dict[str, Any] | Template, values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the graph with every whole-value placeholder replaced by
    its typed value. Unknown placeholders and ones without a value are errors."""
    graph = template.graph if isinstance(template, Template) else template
    wanted = placeholders(graph)
    unknown = sorted(wanted - PLACEHOLDERS)
    if unknown:
        raise InvalidInput("workflow", f"unknown placeholder ${unknown[0]}; known: "
                           + ", ".join(f"${name}" for name in sorted(PLACEHOLDERS)))
    missing = sorted(name for name in wanted if values.get(name) is None)
    if missing:
        raise InvalidInput("workflow", f"no value for placeholder ${missing[0]}")

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            match = _PLACEHOLDER.match(value)
            return copy.deepcopy(values[match.group(1)]) if match else value
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(graph)


def filename_prefix(job_id: str) -> str:
    """Where ComfyUI saves a job's images (output/zmm/<job id>_00001_.png)."""
    return f"zmm/{job_id}"


def bind_job(params: Mapping[str, Any], workflow: str, job_id: str,
             user_dir: Path | None, *, enhanced_prompt: str | None = None) -> dict[str, Any]:
    """The graph a job submits: its own graph (a custom workflow) or its
    template, bound with the job's stored params (its `enhanced_prompt` in
    place of the prompt, when the local LLM wrote one), then its parts (LoRAs,
    the init image, the hires pass) added. The worker and `--print-workflow`
    both bind through here, so the two cannot drift."""
    from zmm.workflows import graph_parts

    source = params.get("graph") or load(workflow, user_dir).graph
    values = {key: params.get(key) for key in PLACEHOLDERS}
    if enhanced_prompt:
        values["prompt"] = enhanced_prompt
    values["filename_prefix"] = filename_prefix(job_id)
    graph = bind(source, values)
    if enhanced_prompt and params.get("graph") and "prompt" not in placeholders(source):
        from zmm.workflows import inputs  # a workflow with named inputs: its prompt's place

        inputs.put(graph, inputs.standard(graph).get("prompt", []), enhanced_prompt)
    parts = graph_parts.Parts.from_params(params)
    if parts.empty:
        return graph
    return graph_parts.apply(graph, parts, width=int(params["width"]),
                                height=int(params["height"]))


def printed_graphs(specs: list[Any], user_dir: Path | None) -> list[dict[str, Any]]:
    """`zmm generate --print-workflow`: the graph each job spec would submit.
    The params go through JSON as they do in the spool; a job has no id before
    it is queued, so each gets a stand-in of the same shape
    (zmm.jobs.placeholder_job_id)."""
    from zmm.jsontext import compact

    return [bind_job(json.loads(compact(spec.stored_params())), spec.workflow,
                     placeholder_job_id(index), user_dir,
                     enhanced_prompt=spec.enhanced_prompt)
            for index, spec in enumerate(specs)]


def _file_names(node: Any) -> list[tuple[str, str]]:
    """(folder, file name) of each model file a node loads."""
    if not isinstance(node, dict):
        return []
    found = []
    for name, value in (node.get("inputs") or {}).items():
        folder = FILE_INPUTS.get((node.get("class_type", ""), name))
        # A link or an unbound "$checkpoint" names no file yet.
        if folder and isinstance(value, str) and not _PLACEHOLDER.match(value) \
                and not (folder == "vae" and value in BUILTIN_VAES):
            found.append((folder, value))
    return found


def _checkpoint_of(node: Any) -> str | None:
    """The model file of a checkpoint or diffusion-model loader."""
    return next((name for folder, name in _file_names(node)
                 if folder in ("checkpoints", "diffusion_models")), None)


def graph_model(graph: dict[str, Any]) -> str | None:
    """The model the graph loads (the first checkpoint or diffusion model, by node order)."""
    return next((name for node in graph.values() if (name := _checkpoint_of(node))), None)


def requirements(graph: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(node class types, checkpoint file names) the graph needs on the server."""
    node_types = {node["class_type"] for node in graph.values()}
    return node_types, model_files(graph).get("checkpoints", set())


def model_files(graph: dict[str, Any]) -> dict[str, set[str]]:
    """Model folder -> the file names the graph loads from it."""
    files: dict[str, set[str]] = {}
    for node in graph.values():
        for folder, name in _file_names(node):
            files.setdefault(folder, set()).add(name)
    return files


def needed_files(graph: dict[str, Any], *, nodes: bool = False) -> list[str]:
    """The model files the graph loads as sorted 'folder/name' strings: a job's
    `needs` (a worker claims it only if its server has every one); `nodes`:
    its node classes too, as 'nodes/CLASS' (a custom workflow's)."""
    files = [f"{folder}/{name}" for folder, names in model_files(graph).items()
             for name in names]
    if nodes:
        files += [f"{NODE_NEEDS}/{node['class_type']}" for node in graph.values()]
    return sorted(set(files))


def _listing(names: list[str]) -> str:
    if not names:
        return "none at all"
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _near(name: str, names: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def check_against_server(graph: dict[str, Any], object_info: dict[str, Any],
                         files: list[str] | Mapping[str, list[str]]) -> None:
    """Refuse a graph whose node types or model files the server lacks, in one
    line naming the missing piece and listing what the server has. `files`:
    folder -> names (a plain list: the checkpoints)."""
    listed = {"checkpoints": list(files)} if isinstance(files, list) else dict(files)
    node_types = {node["class_type"] for node in graph.values()}
    missing_nodes = sorted(node_types - set(object_info))
    if missing_nodes:
        others = f" (nor {', '.join(missing_nodes[1:])})" if len(missing_nodes) > 1 else ""
        raise WorkflowRejected(
            f"node type {missing_nodes[0]!r} is not on the ComfyUI server{others}; "
            f"it has {len(object_info)} node types",
            hint=_near(missing_nodes[0], object_info)
            + "install the custom node that provides it (ComfyUI/custom_nodes/), "
              "or use another workflow")
    for folder, wanted in sorted(model_files(graph).items()):
        have = listed.get(folder, [])
        for name in sorted(wanted):
            if name not in have:
                raise ModelFileMissing(
                    f"{FOLDER_WORDS.get(folder, folder)} {name!r} is not on the ComfyUI server; "
                    "it has: " + _listing(sorted(have)), folder=folder, name=name,
                    hint=_elsewhere(name, folder, listed) or (
                        _near(name, have) + f"put the file in ComfyUI/models/{folder}/ "
                        "or set [models] in config.toml"))


def _elsewhere(name: str, folder: str, listed: Mapping[str, list[str]]) -> str:
    """A file the server has in the other of checkpoints/diffusion_models: the
    family's loader setting is the wrong one for it."""
    other = {"checkpoints": "diffusion_models", "diffusion_models": "checkpoints"}.get(folder)
    if other is None or name not in listed.get(other, []):
        return ""
    loader = "checkpoint" if other == "checkpoints" else "split"
    return (f"the server has it in models/{other}/: set [models] <family>-loader = "
            f"\"{loader}\" (sd35-loader or flux-loader), see docs/models.md")
