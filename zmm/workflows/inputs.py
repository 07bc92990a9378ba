"""A workflow's named inputs: what `--param NAME=VALUE` and zmm's own options
(the prompt, --seed, --size, ...) set in an API graph.

Names come from three places. The standard inputs are found by following the
graph from its sampler: `prompt` and `negative` (the text encoders behind the
sampler's positive and negative conditioning), `seed`, `steps`, `cfg`,
`sampler`, `scheduler`, `denoise`, `guidance` (Flux), `width`, `height`,
`batch_size` (the latent it starts from) and `model` (the checkpoint or
diffusion model its model comes from). The sampler is the first of the chain:
the one no other sampler feeds (a hires pass's sampler comes after it). Every
sampler's seed takes `seed`; everything else lands on the first one only.
Then ComfyUI's App Mode selection (`extra.linearData.inputs` of a UI file)
names inputs when the file has one; else every node the user gave a title of
its own names its values `Title.input` (and `Title` alone when it has one).

Pure: a graph in, names out; nothing here reads a file or asks a server.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zmm.errors import InvalidInput

SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
STANDARD = ("prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "denoise",
            "guidance", "width", "height", "batch_size", "model")
# Inputs of a text encoder that take the prompt (SDXL's two, Flux's two, ...).
TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "t5xxl", "prompt")
# Nodes a conditioning passes through to its encoder: (input followed per output slot).
_ZEROED = frozenset({"ConditioningZeroOut"})
_MODEL_FILES = (("ckpt_name", "checkpoints"), ("unet_name", "diffusion_models"))
_DEPTH = 32


@dataclass(frozen=True)
class Slot:
    node: str
    input: str


@dataclass
class Input:
    """One named input: where it lands, its value now, and what it allows."""

    name: str
    slots: list[Slot]
    class_type: str
    value: Any
    source: str  # standard | app | title
    type: str = "STRING"  # INT | FLOAT | BOOLEAN | STRING | COMBO
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def allowed(self) -> str:
        if self.choices is not None:
            shown = ", ".join(str(choice) for choice in self.choices[:12])
            more = f" and {len(self.choices) - 12} more" if len(self.choices) > 12 else ""
            return f"one of {shown}{more}" if self.choices else "no choices on the server"
        word = {"INT": "an integer", "FLOAT": "a number", "BOOLEAN": "true or false"}.get(
            self.type, "text")
        if self.minimum is not None and self.maximum is not None:
            if self.type == "INT":
                return f"{word} from {int(self.minimum)} to {int(self.maximum)}"
            return f"{word} from {self.minimum:g} to {self.maximum:g}"
        return word

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.slots[0].node, "input": self.slots[0].input,
                "class_type": self.class_type, "type": self.type, "default": self.value,
                "source": self.source, "min": self.minimum, "max": self.maximum,
                "choices": self.choices, "also": [f"{slot.node}.{slot.input}"
                                                  for slot in self.slots[1:]]}


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _inputs(graph: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    node = graph.get(node_id)
    return node.get("inputs") or {} if isinstance(node, dict) else {}


def _class(graph: Mapping[str, Any], node_id: str) -> str:
    node = graph.get(node_id)
    return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def _value_slot(graph: Mapping[str, Any], node_id: str, name: str) -> Slot | None:
    """Where input `name` of a node takes its value: the node itself, or the one
    value of a primitive node linked to it."""
    value = _inputs(graph, node_id).get(name)
    if value is None:
        return None
    for _ in range(_DEPTH):
        if not _is_link(value):
            return Slot(node_id, name)
        node_id = value[0]
        plain = [(key, item) for key, item in _inputs(graph, node_id).items()
                 if not _is_link(item)]
        links = [item for item in _inputs(graph, node_id).values() if _is_link(item)]
        if len(plain) == 1 and not links:
            name, value = plain[0]
        elif len(links) == 1 and not plain:
            value = links[0]
        else:
            return None
    return None


def samplers(graph: Mapping[str, Any]) -> list[str]:
    """The graph's samplers, the first of the chain first (fewest samplers upstream,
    then by node id)."""
    found = [node_id for node_id in graph if _class(graph, node_id) in SAMPLERS]

    def upstream(node_id: str) -> int:
        seen: set[str] = set()
        todo = [node_id]
        while todo:
            for value in _inputs(graph, todo.pop()).values():
                if _is_link(value) and value[0] not in seen and value[0] in graph:
                    seen.add(value[0])
                    todo.append(value[0])
        return sum(1 for other in seen if other in found)

    return sorted(found, key=lambda node_id: (upstream(node_id), _id_key(node_id)))


def _id_key(node_id: str) -> tuple[Any, ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in node_id.split(":"))


def _source(graph: Mapping[str, Any], node_id: str, name: str) -> tuple[str, int] | None:
    value: Any = _inputs(graph, node_id).get(name)
    if not _is_link(value) or value[0] not in graph:
        return None
    return value[0], value[1]


def _text(graph: Mapping[str, Any], link: tuple[str, int] | None,
          found: dict[str, list[Slot]]) -> list[Slot]:
    """The text inputs of the encoder behind a conditioning link (through
    guidance, timestep, control-net and combining nodes); none through a zero-out."""
    for _ in range(_DEPTH):
        if link is None:
            return []
        node_id, slot = link
        inputs = _inputs(graph, node_id)
        if _class(graph, node_id) in _ZEROED:
            return []
        texts = [found_slot for name in TEXT_INPUTS if name in inputs
                 and (found_slot := _value_slot(graph, node_id, name)) is not None]
        if texts:
            return texts
        if "guidance" in inputs and "guidance" not in found:
            guidance = _value_slot(graph, node_id, "guidance")
            if guidance is not None:
                found["guidance"] = [guidance]
        if "positive" in inputs and "negative" in inputs:
            name = "negative" if slot == 1 else "positive"
        else:
            name = next((key for key in inputs if key.startswith(("conditioning", "cond"))
                         and _is_link(inputs[key])), "")
        link = _source(graph, node_id, name) if name else None
    return []


def _upstream(graph: Mapping[str, Any], link: tuple[str, int] | None, wanted: tuple[str, ...],
              follow: tuple[str, ...]) -> str | None:
    """The first node up the chain from `link` with every input of `wanted`,
    following the first linked input of `follow`."""
    for _ in range(_DEPTH):
        if link is None:
            return None
        node_id = link[0]
        inputs = _inputs(graph, node_id)
        if all(name in inputs for name in wanted):
            return node_id
        link = next((_source(graph, node_id, name) for name in follow
                     if _source(graph, node_id, name) is not None), None)
    return None


def standard(graph: Mapping[str, Any]) -> dict[str, list[Slot]]:
    """Standard name -> where it lands, for the names this graph has."""
    chain = samplers(graph)
    if not chain:
        return {}
    first = chain[0]
    kind = _class(graph, first)
    found: dict[str, list[Slot]] = {}

    def put(name: str, node_id: str | None, key: str) -> None:
        if node_id is not None and name not in found:
            slot = _value_slot(graph, node_id, key)
            if slot is not None:
                found[name] = [slot]

    guider = _source(graph, first, "guider")
    guider_id = guider[0] if guider else None
    conditioning = first
    if guider_id is not None:
        conditioning = guider_id
        put("cfg", guider_id, "cfg")
    if kind in ("KSampler", "KSamplerAdvanced"):
        for name, key in (("steps", "steps"), ("cfg", "cfg"), ("sampler", "sampler_name"),
                          ("scheduler", "scheduler"), ("denoise", "denoise")):
            put(name, first, key)
    else:
        put("cfg", first, "cfg")
        select = _source(graph, first, "sampler")
        put("sampler", select[0] if select else None, "sampler_name")
        sigmas = _source(graph, first, "sigmas")
        for name in ("steps", "scheduler", "denoise"):
            put(name, sigmas[0] if sigmas else None, name)
    positive = next((name for name in ("positive", "conditioning", "cond1")
                     if _source(graph, conditioning, name)), None)
    if positive is not None:
        texts = _text(graph, _source(graph, conditioning, positive), found)
        if texts:
            found["prompt"] = texts
    negative = "negative" if _source(graph, conditioning, "negative") else None
    if negative is not None:
        texts = _text(graph, _source(graph, conditioning, negative), {})
        if texts:
            found["negative"] = texts
    seeds = [slot for node_id in chain for key in ("seed", "noise_seed")
             if (slot := _value_slot(graph, node_id, key)) is not None]
    noise = _source(graph, first, "noise")
    if noise is not None:
        seeds.insert(0, _value_slot(graph, noise[0], "noise_seed") or Slot("", ""))
        seeds = [slot for slot in seeds if slot.node]
        for later in chain[1:]:
            more = _source(graph, later, "noise")
            slot = _value_slot(graph, more[0], "noise_seed") if more else None
            if slot is not None and slot not in seeds:
                seeds.append(slot)
    if seeds:
        found["seed"] = seeds
    latent = _upstream(graph, _source(graph, first, "latent_image"), ("width", "height"),
                       ("samples", "latent", "latent_image", "pixels"))
    for name in ("width", "height", "batch_size"):
        put(name, latent, name)
    model_link = _source(graph, conditioning if guider_id else first, "model")
    for key, _folder in _MODEL_FILES:
        holder = _upstream(graph, model_link, (key,), ("model",))
        if holder is not None:
            put("model", holder, key)
            break
    return {name: found[name] for name in STANDARD if name in found}


def _app_mode(graph: Mapping[str, Any], ui: Mapping[str, Any] | None) -> list[tuple[str, Slot]]:
    """ComfyUI's App Mode selection: `extra.linearData.inputs`, each an entry
    [node id, widget name] or {nodeId, widgetName, label}."""
    extra = ui.get("extra") if isinstance(ui, Mapping) else None
    linear = extra.get("linearData") if isinstance(extra, Mapping) else None
    entries = linear.get("inputs") if isinstance(linear, Mapping) else None
    if not isinstance(entries, list):
        return []
    picked: list[tuple[str, Slot]] = []
    for entry in entries:
        label = None
        if isinstance(entry, list) and len(entry) >= 2:
            node_id, widget = entry[0], entry[1]
        elif isinstance(entry, Mapping):
            node_id, widget = entry.get("nodeId"), entry.get("widgetName")
            label = entry.get("label") or entry.get("name")
        else:
            continue
        node_id = str(node_id)
        if isinstance(widget, str) and widget in _inputs(graph, node_id) \
                and not _is_link(_inputs(graph, node_id)[widget]):
            picked.append((str(label) if label else widget, Slot(node_id, widget)))
    names = [name for name, _ in picked]
    return [(name if names.count(name) == 1 else f"{_title(graph, slot.node)}.{name}", slot)
            for name, slot in picked]


def _title(graph: Mapping[str, Any], node_id: str) -> str:
    node = graph.get(node_id)
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    return str(title) if title else node_id


def _titled(graph: Mapping[str, Any], defs: Mapping[str, Any] | None) -> list[tuple[str, Slot]]:
    """Inputs of nodes with a title of the user's own (not the class name, nor,
    with the definitions, its display name)."""
    named: list[tuple[str, Slot]] = []
    titles = [_title(graph, node_id) for node_id in graph]
    for node_id in graph:
        kind, title = _class(graph, node_id), _title(graph, node_id)
        display = (defs or {}).get(kind, {}).get("display_name") if defs else None
        if title in (node_id, kind, display) or titles.count(title) > 1:
            continue
        values = [key for key, value in _inputs(graph, node_id).items() if not _is_link(value)]
        named.extend((f"{title}.{key}", Slot(node_id, key)) for key in values)
        if len(values) == 1:
            named.append((title, Slot(node_id, values[0])))
    return named


def find(graph: Mapping[str, Any], *, ui: Mapping[str, Any] | None = None,
         node_defs: Mapping[str, Any] | None = None) -> dict[str, Input]:
    """Every named input of the graph: the standard ones, then App Mode's (or,
    without a selection, the titled nodes'); a name of the user's wins over a
    standard one. Types and allowed values come from `node_defs` when given."""
    found: dict[str, Input] = {}
    for name, slots in standard(graph).items():
        found[name] = describe(graph, name, slots, "standard", node_defs)
    chosen = _app_mode(graph, ui)
    source = "app" if chosen else "title"
    for name, slot in chosen or _titled(graph, node_defs):
        found[name] = describe(graph, name, [slot], source, node_defs)
    return found


def describe(graph: Mapping[str, Any], name: str, slots: list[Slot], source: str,
              node_defs: Mapping[str, Any] | None) -> Input:
    first = slots[0]
    kind = _class(graph, first.node)
    value = _inputs(graph, first.node).get(first.input)
    item = Input(name, slots, kind, value, source, type=_type_of(value))
    spec = _spec(node_defs, kind, first.input)
    if spec is None:
        return item
    head = spec[0] if isinstance(spec, list) and spec else spec
    options = spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(
        spec[1], Mapping) else {}
    if isinstance(head, list):
        item.type, item.choices = "COMBO", list(head)
    elif head == "COMBO":
        item.type, item.choices = "COMBO", list(options.get("options") or [])
    elif isinstance(head, str) and head in ("INT", "FLOAT", "BOOLEAN", "STRING"):
        item.type = head
        if head in ("INT", "FLOAT"):
            item.minimum, item.maximum = options.get("min"), options.get("max")
    return item


def _spec(node_defs: Mapping[str, Any] | None, kind: str, name: str) -> Any:
    definition = (node_defs or {}).get(kind)
    declared = definition.get("input") if isinstance(definition, Mapping) else None
    if not isinstance(declared, Mapping):
        return None
    for group in ("required", "optional"):
        specs = declared.get(group)
        if isinstance(specs, Mapping) and name in specs:
            return specs[name]
    return None


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INT"
    if isinstance(value, float):
        return "FLOAT"
    return "STRING"


def typed(item: Input, raw: Any, field_name: str) -> Any:
    """`raw` (text from a flag, or a JSON value) as the input's type, checked
    against its range or choices; InvalidInput naming `field_name` otherwise."""
    allowed = item.allowed()
    if item.type == "COMBO":
        text = str(raw)
        if item.choices is not None and text not in [str(choice) for choice in item.choices]:
            raise InvalidInput(field_name, allowed)
        return next((choice for choice in item.choices or [] if str(choice) == text), text)
    if item.type == "BOOLEAN":
        text = str(raw).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidInput(field_name, allowed)
        return text in ("true", "1", "yes")
    if item.type in ("INT", "FLOAT"):
        if isinstance(raw, bool):
            raise InvalidInput(field_name, allowed)
        try:
            number: float = float(str(raw).strip())
        except ValueError:
            raise InvalidInput(field_name, allowed) from None
        if not math.isfinite(number) or (item.type == "INT" and number != int(number)):
            raise InvalidInput(field_name, allowed)
        if (item.minimum is not None and number < item.minimum) or (
                item.maximum is not None and number > item.maximum):
            raise InvalidInput(field_name, allowed)
        return int(number) if item.type == "INT" else number
    return str(raw)


def put(graph: dict[str, Any], slots: list[Slot], value: Any) -> None:
    """Set `value` at every slot of the graph (in place)."""
    for slot in slots:
        graph[slot.node]["inputs"][slot.input] = copy.deepcopy(value)


def value_of(graph: Mapping[str, Any], slots: list[Slot]) -> Any:
    return _inputs(graph, slots[0].node).get(slots[0].input)
