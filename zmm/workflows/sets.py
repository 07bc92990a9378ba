"""`--set NODE.INPUT=VALUE` on a workflow: finding the node (id, title or a
unique class), parsing the value (JSON if it parses, else text), and keeping
the sampler inputs within the ranges their own flags allow.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from zmm.errors import InvalidInput
from zmm.workflows import _PLACEHOLDER, _is_link


def apply_sets(graph: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """A copy with each `NODE.INPUT=VALUE` applied (NODE: id, _meta.title or
    unique class_type; VALUE: JSON if it parses, else the text itself)."""
    result = copy.deepcopy(graph)
    for item in sets:
        target, sep, raw = item.partition("=")
        node_ref, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_ref or not input_name:
            raise InvalidInput("set", f"{item!r} is not NODE.INPUT=VALUE")
        node_id = _find_node(result, node_ref, item)
        node = result[node_id]
        inputs = node.setdefault("inputs", {})
        if input_name not in inputs:
            raise InvalidInput("set", f"{item!r}: node {node_id} ({node.get('class_type')}) "
                               f"has no input {input_name!r}; it has: " + ", ".join(inputs))
        if _is_link(inputs[input_name]):
            raise InvalidInput("set", f"{item!r}: input {input_name!r} is a link from node "
                               f"{inputs[input_name][0]}, not a value")
        value = _parse_value(raw)
        if isinstance(value, list):
            raise InvalidInput("set", f"{item!r}: a list value would be read by ComfyUI as a "
                               "link; quote it as a JSON string")
        _check_sampling_value(item, input_name, value)
        inputs[input_name] = value
    return result


# Sampler inputs --set may change, with the ranges their own flags allow
# (--steps, --cfg, --seed, --denoise): (integer only, lowest, highest).
SAMPLING_RANGES: dict[str, tuple[bool, float, float]] = {
    "steps": (True, 1, 150), "cfg": (False, 0.0, 30.0), "seed": (True, 0, 2**63 - 1),
    "noise_seed": (True, 0, 2**63 - 1), "denoise": (False, 0.0, 1.0),
}


def _check_sampling_value(item: str, input_name: str, value: Any) -> None:
    """A sampler input set to a value its flag would refuse (`3.steps=-5`,
    `3.cfg=abc`) is refused here too; a $placeholder stays allowed."""
    if input_name not in SAMPLING_RANGES or (isinstance(value, str) and _PLACEHOLDER.match(value)):
        return
    whole, low, high = SAMPLING_RANGES[input_name]
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        span = f"an integer from {low} to {high}" if whole else f"a number from {low:g} to {high:g}"
        raise InvalidInput("set", f"{item!r}: {input_name} must be {span}")


def _parse_value(raw: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(constant)  # NaN/Infinity: not JSON ComfyUI can take back

    try:
        value = json.loads(raw, parse_constant=refuse)
    except ValueError:
        return raw
    if isinstance(value, float) and not math.isfinite(value):  # 1e999
        return raw
    return value


def _find_node(graph: dict[str, Any], ref: str, item: str) -> str:
    if ref in graph:
        return ref
    by_title = [nid for nid, node in graph.items()
                if isinstance(node.get("_meta"), dict) and node["_meta"].get("title") == ref]
    by_class = [nid for nid, node in graph.items() if node.get("class_type") == ref]
    for matches in (by_title, by_class):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidInput("set", f"{item!r}: {ref!r} matches nodes {', '.join(matches)}; "
                               "use a node id")
    raise InvalidInput("set", f"{item!r}: no node {ref!r} (ids: {', '.join(graph)})")
