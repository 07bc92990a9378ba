"""A request on a custom workflow (`--workflow FILE`, `--set`, `--param`, a
ComfyUI PNG): the graph it runs, with zmm's own options and `--param
NAME=VALUE` landed on the workflow's named inputs (zmm.workflows.inputs).

A workflow with `$prompt`-style placeholders binds them as the shipped
templates do. Any other workflow takes each option through its standard
inputs: the prompt, `--negative`, `--seed` (a random one when none is given,
as for templates; `--count`'s seeds too), `--steps`, `--cfg`, `--size` or
`--aspect`, `--model`. An option the workflow has no place for is refused
(InvalidInput naming it), and the job records what its graph contains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from zmm import families, jobs
from zmm.errors import InvalidInput

# A request field -> the standard inputs it lands on (only when the user gave it).
OPTIONS = {"negative": ("negative",), "steps": ("steps",), "cfg": ("cfg",),
           "size": ("width", "height"), "aspect": ("width", "height"), "model": ("model",)}

RecordedDefs = Callable[[], Mapping[str, Any] | None]


def attach(spec: jobs.JobSpec, raw: dict[str, Any], template: Any, sets: list[str],
           params: list[str], node_defs: Mapping[str, Any] | None) -> None:
    """Give `spec` its custom graph: `template`'s (a zmm.workflows.Template) with
    `--set`, the options and `params` applied, and its recorded values read back."""
    from zmm import workflows
    from zmm.workflows.sets import apply_sets

    graph = apply_sets(template.graph, sets)
    workflows.validate_api_graph(graph)
    spec.graph = graph
    spec.workflow = template.name
    bound = workflows.placeholders(graph)
    if "prompt" in bound and not spec.prompt:
        raise InvalidInput("prompt", "must not be empty")
    if not bound:
        _land_options(spec, raw, graph, node_defs)
    _land_params(graph, params, template.ui, node_defs)
    if not bound:
        _read_back(spec, graph)
    if "checkpoint" not in bound:
        # The graph names its own checkpoint, or loads none (a model-free workflow).
        spec.model_requested = workflows.graph_model(graph)
        spec.model_key = families.model_family(spec.model_requested) if spec.model_requested else "custom"
        spec.extra = {"family": spec.model_key}
    if template.ui is not None:
        spec.extra["ui_workflow"] = template.ui  # sent as the PNG's `workflow` chunk


def merge_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A `--from` line's `params` ({"NAME": VALUE} or ["NAME=VALUE", ...]) joined
    to `param` (the flag's NAME=VALUE list)."""
    given = raw.get("params")
    if given in (None, "", [], {}):
        return {key: value for key, value in raw.items() if key != "params"}
    if isinstance(given, Mapping):
        extra = [f"{name}={_text(value)}" for name, value in given.items()]
    elif isinstance(given, list):
        extra = [str(item) for item in given]
    else:
        raise InvalidInput("params", 'an object {"NAME": VALUE} or a list of "NAME=VALUE"')
    flag = raw.get("param") or []
    merged = {key: value for key, value in raw.items() if key != "params"}
    merged["param"] = [*([flag] if isinstance(flag, str) else flag), *extra]
    return merged


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def comfy_image(path: Any, chunks: Mapping[str, str]) -> Any:
    """The workflow of a PNG ComfyUI saved: its `prompt` chunk (the API graph it
    ran) and its `workflow` chunk (the UI file), as a zmm.workflows.Template."""
    import json
    from pathlib import Path

    from zmm import workflows

    try:
        graph = json.loads(chunks["prompt"])
        ui = json.loads(chunks["workflow"]) if "workflow" in chunks else None
    except json.JSONDecodeError:
        raise InvalidInput("from-image", f"{path} has a damaged ComfyUI prompt chunk") from None
    workflows.validate_api_graph(graph, source=f"the prompt chunk of {path}")
    return workflows.Template(Path(path).stem, Path(path), graph,
                              ui if isinstance(ui, dict) else None)


def _standard(graph: dict[str, Any], node_defs: Mapping[str, Any] | None) -> dict[str, Any]:
    from zmm.workflows import inputs

    return {name: inputs.describe(graph, name, slots, "standard", node_defs)
            for name, slots in inputs.standard(graph).items()}


def _land_options(spec: jobs.JobSpec, raw: dict[str, Any], graph: dict[str, Any],
                  node_defs: Mapping[str, Any] | None) -> None:
    from zmm.workflows import inputs

    found = _standard(graph, node_defs)

    def land(field: str, name: str, value: Any) -> None:
        item = found.get(name)
        if item is None:
            raise InvalidInput(field, "this workflow has no place for it (no " + name
                               + " input found from its sampler); its inputs: "
                               + (", ".join(found) or "none") + "; see zmm workflow inputs")
        inputs.put(graph, item.slots, inputs.typed(item, value, field))

    if spec.prompt:
        land("prompt", "prompt", spec.prompt)
    given = {field for field in OPTIONS if raw.get(field) not in (None, "")}
    values = {"negative": spec.negative_prompt, "steps": spec.steps, "cfg": spec.cfg,
              "width": spec.width, "height": spec.height, "model": spec.model_requested}
    for field in sorted(given):
        for name in OPTIONS[field]:
            land(field, name, values[name])
    if "seed" in found:
        land("seed", "seed", spec.seed)
    elif raw.get("seed") not in (None, ""):
        land("seed", "seed", spec.seed)
    elif int(raw.get("count") or 1) > 1:
        raise InvalidInput("count", "this workflow has no seed input to vary")


def _land_params(graph: dict[str, Any], params: list[str], ui: Any,
                 node_defs: Mapping[str, Any] | None) -> None:
    from zmm.workflows import inputs

    if not params:
        return
    named = inputs.find(graph, ui=ui, node_defs=node_defs)
    for item in params:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput("param", f"{item!r} is not NAME=VALUE")
        target = named.get(name)
        if target is None:
            raise InvalidInput(f"param {name}", "one of this workflow's inputs: "
                               + (", ".join(named) or "none") + " (zmm workflow inputs FILE)")
        inputs.put(graph, target.slots, inputs.typed(target, value, f"param {name}"))


def _read_back(spec: jobs.JobSpec, graph: dict[str, Any]) -> None:
    """What the job records is what its graph contains."""
    from zmm.workflows import inputs

    slots = inputs.standard(graph)

    def value(name: str) -> Any:
        return inputs.value_of(graph, slots[name]) if name in slots else None

    text = value("prompt")
    if isinstance(text, str) and text.strip():
        spec.prompt = spec.user_prompt = text.strip()
    elif not spec.prompt:
        spec.prompt = spec.user_prompt = "(workflow)"
    negative = value("negative")
    spec.negative_prompt = negative.strip() if isinstance(negative, str) else ""
    for name in ("seed", "steps", "width", "height"):
        number = value(name)
        if isinstance(number, int) and not isinstance(number, bool):
            setattr(spec, name, number)
    cfg = value("cfg")
    if isinstance(cfg, (int, float)) and not isinstance(cfg, bool):
        spec.cfg = float(cfg)
    for name, attribute in (("sampler", "sampler"), ("scheduler", "scheduler")):
        if isinstance(value(name), str):
            setattr(spec, attribute, value(name))


def reseed(spec: jobs.JobSpec) -> None:
    """A `--count` copy of a job on a workflow with named inputs: its own graph,
    with its seed landed."""
    from zmm import workflows
    from zmm.workflows import inputs

    if spec.graph is None or workflows.placeholders(spec.graph):
        return
    import copy

    spec.graph = copy.deepcopy(spec.graph)
    inputs.put(spec.graph, inputs.standard(spec.graph).get("seed", []), spec.seed)
