"""UI-format workflows (what ComfyUI's Save writes: `nodes`, `links`,
`definitions.subgraphs`, ...) into the API graph ComfyUI runs, node for node
as its web page's Export (API) makes it.

What the page does, and so this does: widget values go to input names in the
order of the node's definition (`ui_widgets`); links resolve to
[node id, output slot]; primitive nodes hand their value to the widgets they
feed and are not sent; Reroute nodes are followed through; notes go; a
bypassed node (mode 4) passes each output on from its first input of a
matching type; a muted node (mode 2) is not sent and the inputs that came
from it are dropped; a subgraph's nodes are sent with ids "outer:inner"
("12:5", nested "12:5:3") and its inputs and widgets taken from the node that
holds it; legacy group nodes (`extra.groupNodes`) become subgraphs first
(`ui_groups`). Pure stdlib: `node_defs` is ComfyUI's `/object_info` mapping.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zmm.errors import InvalidInput, NotFound
from zmm.workflows import is_ui_format, ui_widgets
from zmm.workflows.ui_widgets import Widget

VIRTUAL_TYPES = frozenset({"Reroute", "Note", "MarkdownNote", "PrimitiveNode"})
MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20


class UnknownNodeClass(NotFound):
    """A node class the node definitions do not have."""

    def __init__(self, classes: list[str], available: int) -> None:
        others = f" (nor {', '.join(classes[1:])})" if len(classes) > 1 else ""
        super().__init__(f"node class {classes[0]!r} is not in the node definitions{others}; "
                         f"they have {available} classes",
                         hint="install the custom node that provides it on the ComfyUI "
                              "server (ComfyUI/custom_nodes/)")
        self.classes = classes


@dataclass
class Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass
class Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    widgets_values: Any
    properties: dict[str, Any]
    widgets: list[Widget] = field(default_factory=list)


@dataclass
class Graph:
    """One level: the root or a subgraph definition."""

    nodes: dict[str, Node]
    links: dict[int, Link]
    outputs: list[list[int]] = field(default_factory=list)  # subgraph output -> link ids
    input_names: list[str] = field(default_factory=list)  # a subgraph's inputs, in order


@dataclass
class Scope:
    """A graph as placed: the root, or a subgraph held by `holder` in `parent`."""

    graph: Graph
    path: tuple[str, ...] = ()
    holder: Node | None = None
    parent: Scope | None = None

    def exec_id(self, node: Node) -> str:
        return ":".join((*self.path, node.id))


@dataclass(frozen=True)
class Resolved:
    origin: str | None = None  # execution id; None for a value
    slot: int = -1
    value: Any = None


def _id(value: Any) -> str:
    return str(value)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _node(raw: Any) -> Node:
    if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("type"), str):
        raise InvalidInput("workflow", "every node of a UI-format workflow needs an id and a type")
    return Node(id=_id(raw["id"]), type=raw["type"], mode=_int(raw.get("mode")),
                title=raw.get("title") if isinstance(raw.get("title"), str) else None,
                inputs=[slot for slot in raw.get("inputs") or [] if isinstance(slot, dict)],
                outputs=[slot for slot in raw.get("outputs") or [] if isinstance(slot, dict)],
                widgets_values=raw.get("widgets_values"),
                properties=_object(raw.get("properties")))


def _link(raw: Any) -> tuple[int, Link] | None:
    if isinstance(raw, list) and len(raw) >= 5:
        link_id, origin, origin_slot, target, target_slot = raw[:5]
        kind = raw[5] if len(raw) > 5 else None
    elif isinstance(raw, dict):
        link_id, origin, origin_slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
        target, target_slot, kind = raw.get("target_id"), raw.get("target_slot"), raw.get("type")
    else:
        return None
    return _int(link_id, -1), Link(_id(origin), _int(origin_slot), _id(target),
                                   _int(target_slot), kind)


def _graph(raw: Mapping[str, Any]) -> Graph:
    nodes = {}
    for item in raw.get("nodes") or []:
        node = _node(item)
        nodes[node.id] = node
    links = dict(pair for item in raw.get("links") or [] if (pair := _link(item)))
    outputs = [list(slot.get("linkIds") or []) for slot in raw.get("outputs") or []
               if isinstance(slot, dict)]
    names = [str(slot.get("name")) for slot in raw.get("inputs") or [] if isinstance(slot, dict)]
    return Graph(nodes, links, outputs, names)


class Converter:
    """One UI workflow against one set of node definitions."""

    def __init__(self, workflow: Mapping[str, Any], node_defs: Mapping[str, Any], *,
                 choose: Callable[[list[str]], str] = random.choice) -> None:
        self.defs = node_defs
        self.choose = choose
        self.root = _graph(workflow)
        self.subgraphs: dict[str, Graph] = {}
        for item in (workflow.get("definitions") or {}).get("subgraphs") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.subgraphs[item["id"]] = _graph(item)
        for graph in (self.root, *self.subgraphs.values()):
            self._set_widgets(graph)
        self.promoted: dict[int, dict[str, Widget]] = {}
        self._apply_primitives()

    # -- widgets ---------------------------------------------------------------

    def _set_widgets(self, graph: Graph) -> None:
        for node in graph.nodes.values():
            node_def = self.defs.get(node.type)
            if isinstance(node_def, Mapping) and node.type not in self.subgraphs:
                node.widgets = ui_widgets.layout({**node_def, "name": node.type})
            elif node.type == "PrimitiveNode" and isinstance(node.widgets_values, list) \
                    and node.widgets_values:
                node.widgets = [Widget("value", node.widgets_values[0])]
            ui_widgets.apply_values(node.widgets, node.widgets_values, node.type)

    def _promoted(self, holder: Node) -> dict[str, Widget]:
        """The widgets a subgraph's holder node shows: one per subgraph input that
        feeds a widget inside, valued from the holder's `widgets_values`."""
        key = id(holder)
        if key in self.promoted:
            return self.promoted[key]
        graph = self.subgraphs[holder.type]
        widgets: list[Widget] = []
        names = graph.input_names or [str(slot.get("name")) for slot in holder.inputs]
        for slot_index, input_name in enumerate(names):
            for link in graph.links.values():
                if link.origin_id != str(SUBGRAPH_INPUT) or link.origin_slot != slot_index:
                    continue
                target = graph.nodes.get(link.target_id)
                if target is None or link.target_slot >= len(target.inputs):
                    continue
                widget_name = (target.inputs[link.target_slot].get("widget") or {}).get("name")
                shown = self._promoted(target).values() if target.type in self.subgraphs \
                    else target.widgets
                inner = next((w for w in shown if w.name == widget_name), None)
                if inner is not None:
                    widgets.append(Widget(input_name, inner.value,
                                          dynamic_prompt=inner.dynamic_prompt))
                    break
        ui_widgets.apply_values(widgets, holder.widgets_values, holder.type)
        self.promoted[key] = {widget.name: widget for widget in widgets}
        return self.promoted[key]

    def _apply_primitives(self) -> None:
        from zmm.workflows.ui_text import text_replacements

        for graph in (self.root, *self.subgraphs.values()):
            for node in graph.nodes.values():
                if node.type != "PrimitiveNode" or not node.widgets or not node.outputs:
                    continue
                value = node.widgets[0].value
                if value and node.properties.get("Run widget replace on values"):
                    value = text_replacements(str(value), self.all_nodes())
                for link_id in node.outputs[0].get("links") or []:
                    link = graph.links.get(link_id)
                    target = graph.nodes.get(link.target_id) if link else None
                    if link is None or target is None or link.target_slot >= len(target.inputs):
                        continue
                    name = (target.inputs[link.target_slot].get("widget") or {}).get("name")
                    for widget in target.widgets:
                        if widget.name == name:
                            widget.value = value
                            break

    def all_nodes(self) -> list[Node]:
        return [node for graph in (self.root, *self.subgraphs.values())
                for node in graph.nodes.values()]

    # -- links -----------------------------------------------------------------

    def resolve_input(self, scope: Scope, node: Node, slot: int, visited: set[str],
                      kind: Any = None) -> Resolved | None:
        mark = f"{scope.exec_id(node)}[I]{slot}"
        if mark in visited or slot >= len(node.inputs):
            return None
        visited.add(mark)
        slot_info = node.inputs[slot]
        link_id = slot_info.get("link")
        link = scope.graph.links.get(link_id) if isinstance(link_id, int) else None
        if link is None:
            return None
        holder = scope.holder
        if holder is not None and scope.parent is not None \
                and link.origin_id == str(SUBGRAPH_INPUT):
            index = _holder_slot(holder, scope.graph, link.origin_slot)
            if index < 0 or holder.inputs[index].get("link") is None:
                names = scope.graph.input_names
                name = names[link.origin_slot] if link.origin_slot < len(names) \
                    else str(holder.inputs[index].get("name")) if index >= 0 else ""
                widget = self._promoted(holder).get(name)
                return None if widget is None else Resolved(value=widget)
            return self.resolve_input(scope.parent, holder, index, visited)
        origin = scope.graph.nodes.get(link.origin_id)
        if origin is None:
            return None
        return self.resolve_output(scope, origin, link.origin_slot,
                                   kind if kind is not None else slot_info.get("type"), visited)

    def resolve_output(self, scope: Scope, node: Node, slot: int, kind: Any,
                       visited: set[str]) -> Resolved | None:
        mark = f"{scope.exec_id(node)}[O]{slot}"
        if mark in visited:
            return None
        visited.add(mark)
        if node.mode == BYPASSED:
            index = _bypass_slot(node, slot, kind)
            return None if index < 0 else self.resolve_input(scope, node, index, visited)
        if node.type in self.subgraphs:
            inner_scope = Scope(self.subgraphs[node.type], (*scope.path, node.id), node, scope)
            link_ids = inner_scope.graph.outputs[slot] if slot < len(inner_scope.graph.outputs) \
                else []
            link = inner_scope.graph.links.get(link_ids[0]) if link_ids else None
            if link is None:
                return None
            if link.origin_id == str(SUBGRAPH_INPUT):
                return self.resolve_input(scope, node, link.origin_slot, visited)
            inner = inner_scope.graph.nodes.get(link.origin_id)
            if inner is None:
                return None
            return self.resolve_output(inner_scope, inner, link.origin_slot, kind, visited)
        if self.is_virtual(node):
            if slot < len(node.inputs):
                return self.resolve_input(scope, node, slot, visited, kind)
            return None
        return Resolved(scope.exec_id(node), slot)

    def is_virtual(self, node: Node) -> bool:
        return node.type in VIRTUAL_TYPES and node.type not in self.defs

    # -- the API graph -----------------------------------------------------------

    def placed(self) -> list[tuple[Scope, Node]]:
        """Every node that could be sent, subgraphs opened, in file order."""
        found: list[tuple[Scope, Node]] = []

        def walk(scope: Scope, depth: int) -> None:
            for node in scope.graph.nodes.values():
                if node.type in self.subgraphs:
                    if depth > 32:
                        raise InvalidInput("workflow", "subgraphs nest more than 32 deep "
                                           "(a subgraph that holds itself?)")
                    walk(Scope(self.subgraphs[node.type], (*scope.path, node.id), node, scope),
                         depth + 1)
                else:
                    found.append((scope, node))

        walk(Scope(self.root), 0)
        return found

    def convert(self) -> dict[str, Any]:
        from zmm.workflows.ui_text import text_replacements

        sent = [(scope, node) for scope, node in self.placed()
                if not self.is_virtual(node) and node.mode not in (MUTED, BYPASSED)]
        unknown = sorted({node.type for _, node in sent if node.type not in self.defs})
        if unknown:
            raise UnknownNodeClass(unknown, len(self.defs))
        output: dict[str, Any] = {}
        for scope, node in sent:
            inputs: dict[str, Any] = {}
            for widget in node.widgets:
                if widget.sent:
                    value = ui_widgets.sent_value(widget, self.choose)
                    if widget.name == "filename_prefix" and isinstance(value, str) \
                            and node.type in _SAVE_NODES:
                        value = text_replacements(value, self.all_nodes())
                    inputs[widget.name] = value
            for index, slot in enumerate(node.inputs):
                resolved = self.resolve_input(scope, node, index, set())
                if resolved is None:
                    continue
                name = str(slot.get("name"))
                if resolved.origin is None:
                    inputs[name] = ui_widgets.sent_value(resolved.value, self.choose)
                else:
                    inputs[name] = [resolved.origin, resolved.slot]
            node_def = self.defs[node.type]
            title = node.title if node.title is not None else \
                (node_def.get("display_name") or node.type)
            output[scope.exec_id(node)] = {"inputs": inputs, "class_type": node.type,
                                           "_meta": {"title": title}}
        for entry in output.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del entry["inputs"][name]
        return output


_SAVE_NODES = frozenset({"SaveImage", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB",
                         "SaveAnimatedPNG", "CLIPSave", "VAESave", "ModelSave",
                         "LoraSave", "SaveLatent"})


def _valid_connection(a: Any, b: Any) -> bool:
    """Whether slot types `a` and `b` connect ("*" and "" take anything; "A,B" lists)."""
    a = 0 if a in ("", "*") else a
    b = 0 if b in ("", "*") else b
    if not a or not b or a == b:
        return True
    first, second = str(a).lower(), str(b).lower()
    if "," not in first and "," not in second:
        return first == second
    return any(_valid_connection(x, y) for x in first.split(",") for y in second.split(","))


def _holder_slot(holder: Node, graph: Graph, origin_slot: int) -> int:
    """The holder's input for a subgraph input slot, by name (a holder saved
    with fewer inputs, or in another order, still matches); -1: none."""
    if origin_slot < len(graph.input_names):
        name = graph.input_names[origin_slot]
        return next((index for index, slot in enumerate(holder.inputs)
                     if slot.get("name") == name), -1)
    return origin_slot if origin_slot < len(holder.inputs) else -1


def _bypass_slot(node: Node, slot: int, kind: Any) -> int:
    """The input a bypassed node passes to output `slot`: the same index when its
    type fits, else the first input of exactly the type, else the first that fits."""
    inputs = node.inputs
    if kind in ("*", ""):
        return slot if len(inputs) > slot else 0
    out_type = node.outputs[slot].get("type") if slot < len(node.outputs) else None
    if slot < len(inputs) and _valid_connection(inputs[slot].get("type"), out_type) \
            and _valid_connection(inputs[slot].get("type"), kind):
        return slot
    for index, item in enumerate(inputs):
        if item.get("type") == kind:
            return index
    for index, item in enumerate(inputs):
        if _valid_connection(item.get("type"), out_type) \
                and _valid_connection(item.get("type"), kind):
            return index
    return -1


def to_api(ui_workflow: Mapping[str, Any], node_defs: Mapping[str, Any], *,
           choose: Callable[[list[str]], str] = random.choice) -> dict[str, Any]:
    """The API graph of a UI-format workflow (node id -> class_type, inputs,
    _meta.title). Unknown node classes -> UnknownNodeClass (exit 3); not a UI
    workflow -> InvalidInput (exit 2)."""
    if not is_ui_format(ui_workflow):
        raise InvalidInput("workflow", "not a UI-format workflow (an object with a nodes list)")
    return Converter(ui_workflow, node_defs, choose=choose).convert()
